"""The layers of the project and their import rules (docs/architecture.md, "Layers").

    aether_api (generated)  <-  aether (SDK)  <-  aether_hub (Hub)
                                              <-  aether_cli (`aether task`, `aether agents`)

- `aether` never imports `aether_hub` or `aether_cli`, not even lazily: the SDK must work
  where the Hub is absent, and `aether hub`/`task`/`agents` reach them only through the
  `aether.commands` entry points.
- `aether_cli` imports only public modules of `aether` (no `aether._*`) and never the Hub.
- `aether_hub` uses only the public names of `aether` (those in `aether.__all__`).
- `aether_api` imports neither (it is vendorable).
- No import circles among the project's modules (imports under `if TYPE_CHECKING:` excluded,
  imports inside functions included: a lazy import only hides a circle).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import aether

REPO = Path(__file__).resolve().parents[1]
PACKAGES = {
    "aether": REPO / "aether",
    "aether_cli": REPO / "aether_cli",
    "aether_hub": REPO / "aether_hub",
}
GENERATED = REPO / "generated" / "aether_api"


def _module_name(path: Path, root: Path, package: str) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([package, *parts])


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, module: str, is_package: bool) -> Iterator[tuple[str, list[str]]]:
    """(imported module, names) for each import outside `if TYPE_CHECKING:` blocks."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base]) if base else ".".join(anchor)
            yield base, [alias.name for alias in node.names]
        stack.extend(ast.iter_child_nodes(node))


def _modules() -> dict[str, tuple[Path, list[tuple[str, list[str]]]]]:
    found = {}
    for package, root in PACKAGES.items():
        for path in sorted(root.rglob("*.py")):
            name = _module_name(path, root, package)
            tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
            found[name] = (path, list(_imports(tree, name, path.name == "__init__.py")))
    return found


def _top(module: str) -> str:
    return module.split(".")[0]


def test_the_sdk_never_imports_the_hub() -> None:
    offenders = [
        f"{path.relative_to(REPO)} imports {target}"
        for name, (path, imports) in _modules().items()
        if _top(name) == "aether"
        for target, _ in imports
        if _top(target) in {"aether_hub", "aether_cli"}
    ]
    assert offenders == []
    # Nor by name through importlib: no string in the SDK names their modules.
    texts = [
        str(p.relative_to(REPO))
        for p in PACKAGES["aether"].rglob("*.py")
        if any(f'"{pkg}.' in p.read_text(encoding="utf-8") for pkg in ("aether_hub", "aether_cli"))
    ]
    assert texts == []


def test_the_cli_uses_only_public_sdk_modules_and_not_the_hub() -> None:
    offenders = [
        f"{path.relative_to(REPO)} imports {target}"
        for name, (path, imports) in _modules().items()
        if _top(name) == "aether_cli"
        for target, _ in imports
        if _top(target) == "aether_hub"
        or (_top(target) == "aether" and any(p.startswith("_") for p in target.split(".")[1:]))
    ]
    assert offenders == []


def test_the_hub_uses_only_public_sdk_names() -> None:
    public = set(aether.__all__)
    offenders = []
    for name, (path, imports) in _modules().items():
        if _top(name) != "aether_hub":
            continue
        for target, names in imports:
            if target == "aether":
                offenders += [f"{path.name}: aether.{n}" for n in names if n not in public]
            elif _top(target) == "aether":
                offenders.append(f"{path.relative_to(REPO)} imports {target}")
    assert offenders == []


def test_the_generated_package_imports_neither() -> None:
    for path in GENERATED.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for target, _ in _imports(tree, "aether_api", False):
            assert _top(target) not in {"aether", "aether_cli", "aether_hub"}, path


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_circles() -> None:
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, (_, imports) in modules.items():
        edges = graph.setdefault(name, set())
        for target, names in imports:
            # `from pkg import mod` imports pkg.mod when that is a module.
            candidates = [f"{target}.{n}" for n in names if f"{target}.{n}" in modules]
            if target in modules:
                candidates.append(target)
            # A package's __init__ importing its own submodules is how packages re-export.
            edges.update(c for c in candidates if c != name and not c.startswith(name + "."))
    assert _cycles(graph) == []
