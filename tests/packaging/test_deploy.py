"""deploy/: the replicated Hub (compose/replicated.yaml, k8s/replicated/) agrees with the Hub
it runs, and the images (Dockerfile, Dockerfile.hub) hold the whole wheel.

No Docker engine or Kubernetes API server runs here and PyYAML is not a dependency, so the
YAML files are read by `_Yaml`, a strict reader of the small YAML subset they use (block
mappings and sequences, quoted and plain scalars, JSON-style flow sequences, `|` blocks):
anything outside it fails loudly rather than being misread. On that structure the tests
check what would otherwise only show up on a cluster: the Hubs' command lines parse with
the real `aether hub` parser and make a valid HubConfig, the NATS routes and the Hubs'
--nats-url name every node, the probes, budgets and Secret references match. The Dockerfiles
are read instruction by instruction: each copies every package of the wheel before it
installs it, and the repository's .dockerignore keeps local state out of the build context
but none of what they copy.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from aether.address import parse_hub_urls
from aether_hub.commands import configure_hub_parser, hub_config_from_args
from aether_hub.settings import ConfigError, HubConfig

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose" / "replicated.yaml"
KUBERNETES = DEPLOY / "k8s" / "replicated"
HUB_DOCKERFILE = DEPLOY / "Dockerfile.hub"
DOCKERFILES = [DEPLOY / "Dockerfile", HUB_DOCKERFILE]

NATS_CLIENT_PORT = 4222
NATS_CLUSTER_PORT = 6222
HUB_PORT = 50051


# -- a strict reader of the YAML subset of deploy/ -------------------------------------


class YamlSubsetError(ValueError):
    pass


_KEY = re.compile(
    r'^(?P<key>"[^"]*"|[^\s"\'\[\]{}#&*!|>%@`-][^:#]*?|-[^\s:#][^:#]*?):(?:\s+(?P<rest>.*))?$'
)
_INT = re.compile(r"^[-+]?[0-9]+$")


def _strip_comment(text: str) -> str:
    quote = ""
    for i, char in enumerate(text):
        if quote:
            if char == quote:
                quote = ""
        elif char in "\"'" and (i == 0 or text[i - 1] in " [,:"):
            quote = char
        elif char == "#" and (i == 0 or text[i - 1] in " \t"):
            return text[:i].rstrip()
    return text.rstrip()


class _Yaml:
    """One document: `_Yaml(text).document()`."""

    def __init__(self, text: str) -> None:
        if "\t" in text:
            raise YamlSubsetError("a tab character (YAML indentation is spaces)")
        self.lines = text.split("\n")
        self.i = 0

    def _peek(self) -> tuple[int, str] | None:
        while self.i < len(self.lines):
            content = _strip_comment(self.lines[self.i].lstrip(" "))
            if content:
                return len(self.lines[self.i]) - len(self.lines[self.i].lstrip(" ")), content
            self.i += 1
        return None

    def _fail(self, why: str) -> YamlSubsetError:
        return YamlSubsetError(f"line {self.i + 1}: {why}: {self.lines[self.i].strip()!r}")

    def document(self) -> Any:
        head = self._peek()
        if head is None:
            return None
        value = self._block(head[0])
        if self._peek() is not None:
            raise self._fail("unexpected indentation")
        return value

    def _block(self, indent: int) -> Any:
        head = self._peek()
        assert head is not None
        if head[1] == "-" or head[1].startswith("- "):
            return self._sequence(indent)
        return self._mapping(indent)

    def _mapping(self, indent: int) -> dict[str, Any]:
        result: dict[str, Any] = {}
        while (head := self._peek()) is not None and head[0] == indent:
            if head[1] == "-" or head[1].startswith("- "):
                break
            match = _KEY.match(head[1])
            if match is None:
                raise self._fail("not a `key: value` line")
            key = match["key"]
            key = json.loads(key) if key.startswith('"') else key.rstrip()
            if key in result:
                raise self._fail(f"duplicate key {key!r}")
            rest = match["rest"]
            self.i += 1
            if rest == "|":
                result[key] = self._literal(indent)
            elif rest:
                result[key] = _scalar(rest, self._fail)
            else:
                result[key] = self._nested(indent)
        return result

    def _nested(self, indent: int) -> Any:
        head = self._peek()
        if head is not None and head[0] > indent:
            return self._block(head[0])
        if head is not None and head[0] == indent and head[1].startswith("- "):
            return self._sequence(indent)  # `key:` then `- item` at the key's column
        return None

    def _sequence(self, indent: int) -> list[Any]:
        result: list[Any] = []
        while (head := self._peek()) is not None and head[0] == indent:
            if not (head[1] == "-" or head[1].startswith("- ")):
                raise self._fail("a sequence item expected")
            item = head[1][1:].lstrip(" ")
            if not item:
                self.i += 1
                result.append(self._nested(indent))
            elif _KEY.match(item) and item[0] not in "\"'[":
                # `- key: value`: a mapping whose keys sit where this first one does.
                line = self.lines[self.i]
                self.lines[self.i] = line[:indent] + " " + line[indent + 1 :]
                result.append(self._mapping(indent + len(head[1]) - len(item)))
            else:
                self.i += 1
                result.append(_scalar(item, self._fail))
        return result

    def _literal(self, indent: int) -> str:
        raw: list[str] = []
        while self.i < len(self.lines):
            line = self.lines[self.i]
            if line.strip() and len(line) - len(line.lstrip(" ")) <= indent:
                break
            raw.append(line)
            self.i += 1
        while raw and not raw[-1].strip():
            raw.pop()
        if not raw:
            return ""
        margin = len(raw[0]) - len(raw[0].lstrip(" "))
        if any(line.strip() and not line.startswith(" " * margin) for line in raw):
            raise self._fail("a `|` block line less indented than its first")
        return "\n".join(line[margin:] for line in raw) + "\n"


def _scalar(text: str, fail: Any) -> Any:
    text = _strip_comment(text)
    if text.startswith('"'):
        try:
            return json.loads(text)
        except ValueError:
            raise fail("not a complete double-quoted string") from None
    if text.startswith("'"):
        if len(text) < 2 or not text.endswith("'"):
            raise fail("not a complete single-quoted string")
        return text[1:-1].replace("''", "'")
    if text.startswith("["):
        try:
            value = json.loads(text)
        except ValueError:
            raise fail("a flow sequence this reader takes must be a JSON array") from None
        if not isinstance(value, list):
            raise fail("not a flow sequence")
        return value
    if text[0] in "{&*!|>%@`" or ": " in text or " #" in text:
        raise fail("outside the YAML subset of deploy/ (flow mapping, anchor, tag, ...)")
    if _INT.match(text):
        return int(text)
    return {"true": True, "false": False, "null": None, "~": None}.get(text, text)


def load_all(path: Path) -> list[Any]:
    """The documents of a YAML file (`---` separated), empty ones left out."""
    documents = re.split(r"^---[ \t]*$", path.read_text(encoding="utf-8"), flags=re.M)
    try:
        parsed = [_Yaml(text).document() for text in documents]
    except YamlSubsetError as exc:
        raise AssertionError(f"{path.relative_to(ROOT)}: {exc}") from None
    return [doc for doc in parsed if doc is not None]


def test_the_reader_reads_what_deploy_uses() -> None:
    text = (
        "a: 1  # comment\n"
        "b:\n"
        "  - x\n"
        '  - "y: z"\n'
        "  - name: n\n"
        "    value: 'it''s'\n"
        'c: ["CMD", "p"]\n'
        "d: |\n"
        "  line 1\n"
        "\n"
        "    line 2\n"
        "e:\n"
        "f: ${V:?set V}\n"
        "g: nats://h:1\n"
    )
    assert _Yaml(text).document() == {
        "a": 1,
        "b": ["x", "y: z", {"name": "n", "value": "it's"}],
        "c": ["CMD", "p"],
        "d": "line 1\n\n  line 2\n",
        "e": None,
        "f": "${V:?set V}",
        "g": "nats://h:1",
    }
    for bad in ("a: 1\na: 2\n", "a: {b: 1}\n", "a: &x 1\n", "a:\n\tb: 1\n", "a: 1\n  b: 2\n"):
        with pytest.raises(YamlSubsetError):
            _Yaml(bad).document()


# -- the files ----------------------------------------------------------------------------


def _yaml_files() -> list[Path]:
    return sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")])


def test_the_replicated_deployment_files_exist() -> None:
    assert COMPOSE.is_file()
    assert (KUBERNETES / "nats.yaml").is_file()
    assert (KUBERNETES / "hub.yaml").is_file()
    # One layout: Compose files in compose/, manifests in k8s/.
    assert not (DEPLOY / "compose.yaml").exists()
    assert not (DEPLOY / "kubernetes").exists()


@pytest.mark.parametrize("path", _yaml_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_yaml_file_parses(path: Path) -> None:
    documents = load_all(path)
    assert documents, f"{path}: no document"
    for doc in documents:
        assert isinstance(doc, dict), f"{path}: a document that is not a mapping"
        if "services" in doc:
            for name, service in doc["services"].items():
                assert "image" in service or "build" in service, f"{path}: {name}"
        else:
            assert {"apiVersion", "kind", "metadata"} <= doc.keys(), path
            assert doc["metadata"]["name"], path


def _compose() -> dict[str, Any]:
    (doc,) = load_all(COMPOSE)
    assert isinstance(doc, dict)
    return doc


def _manifests() -> list[dict[str, Any]]:
    return [doc for path in sorted(KUBERNETES.glob("*.yaml")) for doc in load_all(path)]


def _one(kind: str, name: str) -> dict[str, Any]:
    (found,) = [d for d in _manifests() if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def _flag(argv: list[str], flag: str) -> str:
    assert argv.count(flag) == 1, f"{flag} given {argv.count(flag)} times in {argv}"
    return argv[argv.index(flag) + 1]


def _hosts(urls: str, scheme: str) -> list[tuple[str, int]]:
    found = []
    for url in urls.split(","):
        match = re.fullmatch(rf"{scheme}://([a-z0-9.-]+):(\d+)", url.strip())
        assert match, f"{url!r} is not {scheme}://host:port"
        found.append((match[1], int(match[2])))
    return found


# -- the Hub's command line, through the real parser ----------------------------------------


def _hub_config(argv: list[str], config_file: Path, mount: str) -> HubConfig:
    """The HubConfig `aether hub` makes of `argv`, with its --config read from `config_file`
    (the file the container gets at `mount`); failing the test on a parser or config error."""
    assert argv[:2] == ["aether", "hub"], argv
    parser = argparse.ArgumentParser(prog="aether hub")
    configure_hub_parser(parser)
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            args = parser.parse_args(argv[2:])
    except SystemExit:
        pytest.fail(f"`aether hub` refuses {shlex.join(argv)}:\n{errors.getvalue()}")
    assert args.config == mount, "the --config path is not the file mounted for it"
    args.config = str(config_file)
    try:
        config = hub_config_from_args(args)
        config.validate()
    except ConfigError as exc:
        pytest.fail(f"the Hub would not start with {shlex.join(argv)}: {exc}")
    return config


def _check_replica(config: HubConfig, nats_nodes: set[str], env: set[str]) -> None:
    assert config.store == "jetstream"
    assert config.store_replicas == len(nats_nodes) == 3
    assert config.port == HUB_PORT
    assert config.metrics_port == 9464
    assert config.host == "0.0.0.0"
    assert config.nats_url is not None
    listed = _hosts(config.nats_url, "nats")
    assert {host for host, _ in listed} == nats_nodes
    assert len(listed) == len(nats_nodes)
    assert {port for _, port in listed} == {NATS_CLIENT_PORT}
    assert config.client_token_env == "AETHER_CLIENT_TOKEN"
    needed = {config.client_token_env} | {a.secret_env for a in config.agents}
    assert needed <= env, f"the container lacks {needed - env}"
    assert config.agents, "no enrolled agent: without --dev none could register"


def _compose_nats() -> dict[str, list[str]]:
    services = _compose()["services"]
    return {name: s["command"] for name, s in services.items() if name.startswith("nats-")}


def _compose_hubs() -> dict[str, dict[str, Any]]:
    services = _compose()["services"]
    return {name: s for name, s in services.items() if name.startswith("hub-")}


def test_compose_hub_command_lines_parse_and_name_every_nats_node() -> None:
    hubs = _compose_hubs()
    assert sorted(hubs) == ["hub-1", "hub-2"]
    for service in hubs.values():
        argv = service["command"]
        mount = _flag(argv, "--config")
        (source,) = [v.split(":")[0] for v in service["volumes"] if v.split(":")[1] == mount]
        config = _hub_config(argv, COMPOSE.parent / source, mount)
        _check_replica(config, set(_compose_nats()), set(service["environment"]))


def test_kubernetes_hub_command_line_parses_and_names_every_nats_node(tmp_path: Path) -> None:
    deployment = _one("Deployment", "aether-hub")
    spec = deployment["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    argv = container["command"]
    mount = _flag(argv, "--config")
    (volume_mount,) = [m for m in container["volumeMounts"] if mount.startswith(m["mountPath"])]
    (volume,) = [v for v in spec["volumes"] if v["name"] == volume_mount["name"]]
    config_map = _one("ConfigMap", volume["configMap"]["name"])
    key = mount[len(volume_mount["mountPath"]) :].lstrip("/")
    config_file = tmp_path / key
    config_file.write_text(config_map["data"][key])

    statefulset = _one("StatefulSet", "nats")
    nodes = {
        f"{statefulset['metadata']['name']}-{i}.{statefulset['spec']['serviceName']}"
        for i in range(statefulset["spec"]["replicas"])
    }
    config = _hub_config(argv, config_file, mount)
    _check_replica(config, nodes, {e["name"] for e in container["env"]})

    token = {e["name"]: e for e in container["env"]}["AETHER_CLIENT_TOKEN"]
    assert token["valueFrom"]["secretKeyRef"] == {"name": "aether-hub", "key": "client-token"}


# -- NATS ------------------------------------------------------------------------------------


def test_compose_nats_nodes_form_one_jetstream_cluster() -> None:
    compose = _compose()
    nodes = _compose_nats()
    assert sorted(nodes) == ["nats-1", "nats-2", "nats-3"]
    for name, argv in nodes.items():
        service = compose["services"][name]
        assert service["image"] == "nats:2.10-alpine"
        assert _flag(argv, "--server_name") == name
        assert "-js" in argv
        assert _flag(argv, "--cluster_name") == "aether"
        assert _flag(argv, "-p") == str(NATS_CLIENT_PORT)
        assert _flag(argv, "-m") == "8222"
        cluster = _hosts(_flag(argv, "--cluster"), "nats")
        assert cluster == [("0.0.0.0", NATS_CLUSTER_PORT)]
        routes = _hosts(_flag(argv, "--routes"), "nats-route")
        assert sorted(routes) == [(node, NATS_CLUSTER_PORT) for node in sorted(nodes)]
        # The JetStream store is a named volume, so it outlives the container.
        store = _flag(argv, "-sd")
        (volume,) = [v.split(":")[0] for v in service["volumes"] if v.split(":")[1] == store]
        assert volume in compose["volumes"]
        assert service["healthcheck"]["test"][-1] == "http://127.0.0.1:8222/healthz"


def test_compose_hubs_wait_for_nats_and_have_health_checks() -> None:
    for name, service in _compose_hubs().items():
        assert set(service["depends_on"]) == set(_compose_nats()), name
        for dependency in service["depends_on"].values():
            assert dependency["condition"] == "service_healthy"
        check = service["healthcheck"]["test"]
        assert check[:3] == ["CMD", "python", "-c"]
        assert f"('127.0.0.1', {HUB_PORT})" in check[3]
        assert any(p.endswith(f":{HUB_PORT}") for p in service["ports"])


# -- the images ---------------------------------------------------------------------------


def _instructions(dockerfile: Path) -> list[tuple[str, list[str]]]:
    """(INSTRUCTION, words) pairs, continuation lines joined, comments dropped."""
    lines = [ln for ln in dockerfile.read_text().splitlines() if not ln.lstrip().startswith("#")]
    text = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    result = []
    for line in text.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            result.append((keyword.upper(), rest.split()))
    return result


def _copies(dockerfile: Path) -> list[tuple[int, list[str], str]]:
    """(instruction index, sources, destination) of every COPY from the build context."""
    found = []
    for i, (keyword, words) in enumerate(_instructions(dockerfile)):
        if keyword == "COPY":
            paths = [w for w in words if not w.startswith("--")]
            assert paths and not paths[0].startswith("["), f"{dockerfile.name}: {words}"
            assert len(paths) >= 2, f"{dockerfile.name}: COPY {words}"
            found.append((i, paths[:-1], paths[-1]))
    return found


def _wheel_packages() -> list[str]:
    pyproject = (ROOT / "pyproject.toml").read_text()
    wheel = re.search(
        r"^\[tool\.hatch\.build\.targets\.wheel\]\npackages = (\[.*\])$", pyproject, re.M
    )
    assert wheel, "the wheel's package list moved in pyproject.toml"
    packages = json.loads(wheel[1])
    assert isinstance(packages, list) and packages
    return [str(p) for p in packages]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_the_image_copies_every_package_of_the_wheel(dockerfile: Path) -> None:
    # hatchling builds the wheel from what is in /app: a package not copied there would be
    # missing from the installed image (and `aether hub` lives in aether_hub).
    instructions = _instructions(dockerfile)
    (workdir,) = [words for keyword, words in instructions if keyword == "WORKDIR"]
    assert workdir == ["/app"], dockerfile.name
    (install,) = [
        i
        for i, (keyword, words) in enumerate(instructions)
        if keyword == "RUN" and words[:3] == ["pip", "install", "--no-cache-dir"]
    ]
    at_app = set()  # the repository paths the COPYs before the install put into /app
    for i, sources, destination in _copies(dockerfile):
        if i > install:
            continue
        for source in sources:
            assert (ROOT / source).exists(), f"{dockerfile.name} copies a missing {source}"
            if destination in (f"./{source}", f"./{source}/", f"/app/{source}") or (
                destination in ("./", "/app/") and "/" not in source
            ):
                at_app.add(source)
    for needed in ("pyproject.toml", "README.md"):  # the project and its readme metadata
        assert needed in at_app, f"{dockerfile.name} does not copy {needed} to /app"
    for package in _wheel_packages():
        assert any(package == s or package.startswith(s + "/") for s in at_app), (
            f"{dockerfile.name} does not copy the wheel's package {package} to /app "
            "before `pip install`"
        )


def test_the_hub_image_installs_the_hub_extra() -> None:
    instructions = _instructions(HUB_DOCKERFILE)
    (install,) = [words for keyword, words in instructions if keyword == "RUN"]
    assert install[:4] == ["pip", "install", "--no-cache-dir", "'.[hub]'"]
    # No ENTRYPOINT: a Compose `command:` or a Kubernetes `command:` replaces the CMD whole.
    assert "ENTRYPOINT" not in {keyword for keyword, _ in instructions}


def test_the_replicated_hubs_run_the_hub_image() -> None:
    images = set()
    for name, service in _compose_hubs().items():
        build = service["build"]
        assert set(build) == {"context", "dockerfile"}, name
        assert (COMPOSE.parent / build["context"]).resolve() == ROOT, name
        assert (ROOT / build["dockerfile"]).resolve() == HUB_DOCKERFILE, name
        assert service["command"][:2] == ["aether", "hub"], name
        images.add(service["image"])
    # One image: Compose builds it, the Kubernetes Deployment runs it.
    (image,) = images
    (container,) = _one("Deployment", "aether-hub")["spec"]["template"]["spec"]["containers"]
    assert container["image"] == image


# -- .dockerignore -----------------------------------------------------------------------


def _glob_regex(pattern: str) -> str:
    """A .dockerignore pattern as a regular expression (Go filepath.Match, plus `**`)."""
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[":
            end = pattern.index("]", i + 2)
            body = pattern[i + 1 : end]
            out.append("[" + ("^" + body[1:] if body.startswith(("!", "^")) else body) + "]")
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return "".join(out)


def _dockerignored() -> Callable[[str], bool]:
    """`excluded(path)` for paths relative to the repository root, as Docker decides it:
    the last pattern that matches the path or one of its parent directories wins."""
    rules = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line[1:].strip() if negate else line
        rules.append((negate, re.compile(_glob_regex(pattern.strip("/")))))

    def excluded(path: str) -> bool:
        parts = path.split("/")
        candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        result = False
        for negate, rule in rules:
            if any(rule.fullmatch(c) for c in candidates):
                result = not negate
        return result

    return excluded


def test_dockerignore_matcher() -> None:
    assert re.fullmatch(_glob_regex("**/__pycache__"), "__pycache__")
    assert re.fullmatch(_glob_regex("**/__pycache__"), "a/b/__pycache__")
    assert re.fullmatch(_glob_regex(".venv*"), ".venv-tools")
    assert not re.fullmatch(_glob_regex(".venv*"), "a/.venv")
    assert re.fullmatch(_glob_regex("*.py[cod]"), "x.pyc")
    assert not re.fullmatch(_glob_regex("*.py[!cod]"), "x.pyc")


def test_dockerignore_keeps_local_state_out_and_what_the_images_copy_in() -> None:
    excluded = _dockerignored()
    for left_out in (
        ".venv/bin/python",
        ".venv-tools/bin/ruff",
        ".git/HEAD",
        "bench/results.json",
        "build/lib/aether/__init__.py",
        "dist/aether_agent_sdk-0.1.0-py3-none-any.whl",
        "aether_agent_sdk.egg-info/PKG-INFO",
        "aether/__pycache__/cli.cpython-311.pyc",
        "aether_hub/x.pyc",
        ".mypy_cache/3.10/cache.0.db",
        ".ruff_cache/CACHEDIR.TAG",
        ".pytest_cache/v/cache/lastfailed",
        "tests/.pytest_cache/README.md",
        ".hypothesis/examples/x",
        ".coverage",
        ".coverage.host.1234",
        "htmlcov/index.html",
        "hub.db",
        "deploy/compose/tls/server.key",
    ):
        assert excluded(left_out), f"{left_out} would go into the build context"
    copied = {s for d in DOCKERFILES for _, sources, _ in _copies(d) for s in sources}
    assert "aether_hub" in copied and "deploy/hub.toml" in copied
    for source in sorted(copied):
        path = ROOT / source
        files = [path] if path.is_file() else sorted(path.rglob("*"))
        for file in files:
            relative = file.relative_to(ROOT).as_posix()
            if file.is_dir() or "__pycache__" in file.parts or file.suffix == ".pyc":
                continue
            assert not excluded(relative), f".dockerignore leaves out {relative}, which is copied"


def test_kubernetes_nats_statefulset_routes_every_node() -> None:
    statefulset = _one("StatefulSet", "nats")
    spec = statefulset["spec"]
    assert spec["replicas"] == 3
    headless = _one("Service", spec["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True
    assert {p["port"] for p in headless["spec"]["ports"]} >= {NATS_CLIENT_PORT, NATS_CLUSTER_PORT}

    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "nats:2.10-alpine"
    config_path = _flag(container["args"], "--config")
    (config_volume,) = [
        m for m in container["volumeMounts"] if config_path.startswith(m["mountPath"] + "/")
    ]
    (volume,) = [v for v in pod["volumes"] if v["name"] == config_volume["name"]]
    conf = _one("ConfigMap", volume["configMap"]["name"])["data"][Path(config_path).name]

    nodes = [f"nats-{i}.{spec['serviceName']}" for i in range(spec["replicas"])]
    routes = re.findall(r"nats-route://([a-z0-9.-]+):(\d+)", conf)
    assert sorted(routes) == [(node, str(NATS_CLUSTER_PORT)) for node in nodes]
    assert re.search(r"^\s*name: aether$", conf, re.M)
    assert re.search(rf"^\s*listen: 0\.0\.0\.0:{NATS_CLUSTER_PORT}$", conf, re.M)
    assert re.search(rf"^listen: 0\.0\.0\.0:{NATS_CLIENT_PORT}$", conf, re.M)
    assert re.search(r"^http: 0\.0\.0\.0:8222$", conf, re.M)
    store = re.search(r"jetstream \{\s*store_dir: (\S+)\s*\}", conf)
    assert store, "JetStream is not enabled with a store_dir"
    (claim,) = spec["volumeClaimTemplates"]
    (data_mount,) = [m for m in container["volumeMounts"] if m["name"] == claim["metadata"]["name"]]
    assert data_mount["mountPath"] == store[1]
    assert {e["name"] for e in container["env"]} >= {"POD_NAME"}
    assert "server_name: $POD_NAME" in conf


def test_kubernetes_hub_probes_service_and_disruption_budgets() -> None:
    deployment = _one("Deployment", "aether-hub")
    assert deployment["spec"]["replicas"] == 2
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"] == {"port": HUB_PORT}, probe

    service = _one("Service", "aether-hub")
    assert service["spec"]["selector"] == labels
    (grpc,) = [p for p in service["spec"]["ports"] if p["name"] == "grpc"]
    assert grpc["port"] == HUB_PORT
    assert parse_hub_urls(f"{service['metadata']['name']}:{grpc['port']}")

    hub_budget = _one("PodDisruptionBudget", "aether-hub")
    assert hub_budget["spec"] == {"minAvailable": 1, "selector": {"matchLabels": labels}}
    statefulset = _one("StatefulSet", "nats")
    nats_budget = _one("PodDisruptionBudget", "nats")
    assert nats_budget["spec"] == {
        "minAvailable": 2,
        "selector": {"matchLabels": statefulset["spec"]["template"]["metadata"]["labels"]},
    }
    # The client token is referenced, never shipped.
    assert not [d for d in _manifests() if d["kind"] == "Secret"]


def test_readme_gives_the_agents_address_lists() -> None:
    readme = (DEPLOY / "README.md").read_text()
    for addresses in ("hub-1:50051,hub-2:50051", "aether-hub:50051"):
        assert f"AETHER_HUB_URL={addresses}" in readme
        assert parse_hub_urls(addresses)
    assert set(_compose_hubs()) == {a.host for a in parse_hub_urls("hub-1:50051,hub-2:50051")}
