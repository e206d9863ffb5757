"""deploy/: the containers' commands, run on the host exactly as the Dockerfiles say.

No Docker engine runs here, so the images are never built; instead the `CMD` and `ENV`
of each Dockerfile are read from the file and run as processes (only the ports,
0.0.0.0 → 127.0.0.1, and the container's file paths — the config file the image copies,
the TLS files it expects mounted, made here with trustme — are changed), from a directory
laid out like the image's /app.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import shutil
import signal
import socket
import ssl
import sys
from pathlib import Path

import pytest
import trustme
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from aether._wire import client as wire_client
from aether._wire import pb

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
BIN = Path(sys.executable).parent
TOKEN = "ct-test-token"
AGENT_SECRET = "sk-test-agent-secret"


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    lines = [ln for ln in dockerfile.read_text().splitlines() if not ln.lstrip().startswith("#")]
    text = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    result = []
    for line in text.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


def _cmd(dockerfile: Path) -> list[str]:
    (cmd,) = [rest for kw, rest in _instructions(dockerfile) if kw == "CMD"]
    argv = json.loads(cmd)
    assert isinstance(argv, list) and all(isinstance(a, str) for a in argv)
    return argv


def _env(dockerfile: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for kw, rest in _instructions(dockerfile):
        if kw == "ENV":
            for pair in shlex.split(rest):
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _replace_after(argv: list[str], flag: str, value: str) -> list[str]:
    i = argv.index(flag)
    return [*argv[: i + 1], value, *argv[i + 2 :]]


async def _wait_listening(port: int, proc: asyncio.subprocess.Process) -> None:
    for _ in range(600):
        if proc.returncode is not None:
            raise AssertionError(f"process exited with {proc.returncode} before listening")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        return
    raise AssertionError(f"nothing listens on {port}")


async def _http_status(port: int, path: str) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: probe\r\n\r\n".encode())
    await writer.drain()
    line = await asyncio.wait_for(reader.readline(), 10)
    writer.close()
    return int(line.split()[1])


async def _stop(proc: asyncio.subprocess.Process) -> tuple[int, str]:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return (proc.returncode if proc.returncode is not None else -1), out.decode(errors="replace")


def _copied_to(dockerfile: Path, target: str) -> Path:
    """The repository file a Dockerfile COPYs to `target`."""
    for kw, rest in _instructions(dockerfile):
        if kw == "COPY" and rest.split()[-1] == target:
            return ROOT / rest.split()[0]
    raise AssertionError(f"{dockerfile.name} copies nothing to {target}")


def test_the_hub_container_serves_tls_enrolled_agents_only() -> None:
    argv = _cmd(DEPLOY / "Dockerfile.hub")
    assert "--dev" not in argv and "--insecure" not in argv
    assert "--tls-cert" in argv and "--tls-key" in argv and "--client-token-env" in argv


async def test_container_commands_run_as_written(tmp_path: Path) -> None:
    # The Hub container: its CMD, on loopback and a free port, with the config file the
    # image copies and TLS files where the container expects them mounted.
    dockerfile_hub = DEPLOY / "Dockerfile.hub"
    hub_port = _free_port()
    hub_argv = _cmd(dockerfile_hub)
    assert hub_argv[:2] == ["aether", "hub"]
    hub_argv = _replace_after(hub_argv, "--host", "127.0.0.1")
    hub_argv = _replace_after(hub_argv, "--port", str(hub_port))
    config_path = hub_argv[hub_argv.index("--config") + 1]
    hub_argv = _replace_after(hub_argv, "--config", str(_copied_to(dockerfile_hub, config_path)))
    ca = trustme.CA()
    server = ca.issue_cert("localhost", "127.0.0.1")
    tls_dir = tmp_path / "tls"
    tls_dir.mkdir()
    server.cert_chain_pems[0].write_to_path(str(tls_dir / "tls.crt"))
    server.private_key_pem.write_to_path(str(tls_dir / "tls.key"))
    ca.cert_pem.write_to_path(str(tls_dir / "ca.crt"))
    hub_argv = _replace_after(hub_argv, "--tls-cert", str(tls_dir / "tls.crt"))
    hub_argv = _replace_after(hub_argv, "--tls-key", str(tls_dir / "tls.key"))
    env_path = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    hub = await asyncio.create_subprocess_exec(
        *hub_argv,
        env={
            **os.environ,
            "PATH": env_path,
            "AETHER_CLIENT_TOKEN": TOKEN,
            "MY_AGENT_SECRET": AGENT_SECRET,
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    agent: asyncio.subprocess.Process | None = None
    try:
        await _wait_listening(hub_port, hub)

        # The agent container: /app holds agent.py (COPY'd from the quickstart) and the
        # CMD runs from there with the image's ENV.
        dockerfile = DEPLOY / "Dockerfile"
        copies = [rest.split() for kw, rest in _instructions(dockerfile) if kw == "COPY"]
        assert ["examples/quickstart.py", "./agent.py"] in copies
        shutil.copy(ROOT / "examples" / "quickstart.py", tmp_path / "agent.py")
        health_port = _free_port()
        argv = _cmd(dockerfile)
        assert argv[:2] == ["sh", "-c"] and "--health-port 8080" in argv[2]
        argv[2] = argv[2].replace(
            "--health-port 8080", f"--health-port {health_port} --health-host 127.0.0.1"
        )
        image_env = _env(dockerfile)
        agent = await asyncio.create_subprocess_exec(
            *argv,
            cwd=tmp_path,
            env={
                **os.environ,
                **image_env,
                "PATH": env_path,
                "AETHER_HUB_URL": f"grpcs://127.0.0.1:{hub_port}",
                "AETHER_TLS_CA_FILE": str(tls_dir / "ca.crt"),
                "AETHER_AGENT_SECRET": AGENT_SECRET,
            },
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        await _wait_listening(health_port, agent)

        client_tls = ssl.create_default_context(cafile=str(tls_dir / "ca.crt"))
        client_tls.set_alpn_protocols(["h2"])
        channel = Channel("127.0.0.1", hub_port, ssl=client_tls)
        try:
            anonymous = wire_client.TaskServiceStub(channel)
            with pytest.raises(GRPCError) as refused:
                await anonymous.submit_task(pb.SubmitTaskRequest(description="x"), timeout=10)
            assert refused.value.status is Status.UNAUTHENTICATED

            tasks = wire_client.TaskServiceStub(
                channel, metadata={"authorization": f"Bearer {TOKEN}"}
            )
            # Routed by the task type the image's AETHER_CAPABILITIES declares.
            submitted = await tasks.submit_task(
                pb.SubmitTaskRequest(description="from the container", task_type="analysis"),
                timeout=10,
            )

            async def _final() -> pb.Task | None:
                last = None
                request = pb.WatchTaskRequest(task_id=submitted.task_id)
                async for update in tasks.watch_task(request):
                    last = update.task
                return last

            final = await asyncio.wait_for(_final(), 60)
            assert final is not None and final.state is pb.TaskState.SUCCEEDED
            assert final.result == b"Processed: from the container"
            assert final.assigned_agent_id == image_env["AETHER_AGENT_ID"]
        finally:
            channel.close()

        assert await _http_status(health_port, "/healthz") == 200
        assert await _http_status(health_port, "/readyz") == 200
        code, out = await _stop(agent)
        assert code == 0, out
        assert "stopping: received SIGTERM" in out
    finally:
        if agent is not None and agent.returncode is None:
            agent.kill()
            await agent.communicate()
        code, out = await _stop(hub)
    assert code == 0, out


def test_probes_point_at_what_the_agent_serves() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert "EXPOSE 8080" in dockerfile and "--health-port 8080" in dockerfile
    agent_yaml = (DEPLOY / "k8s" / "agent.yaml").read_text()
    assert re.search(r"name: health\s+containerPort: 8080", agent_yaml)
    assert re.search(r"livenessProbe:\s+httpGet:\s+path: /healthz\s+port: health", agent_yaml)
    assert re.search(r"readinessProbe:\s+httpGet:\s+path: /readyz\s+port: health", agent_yaml)
    compose = (DEPLOY / "compose" / "compose.yaml").read_text()
    assert "http://127.0.0.1:8080/readyz" in compose
    # Kubernetes waits at least the agent's default shutdown grace before killing it.
    grace = re.search(r"terminationGracePeriodSeconds: (\d+)", agent_yaml)
    assert grace is not None and int(grace.group(1)) > 30
