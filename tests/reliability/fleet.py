"""Agent processes of the reliability scenarios: `python -m tests.reliability.fleet ...`.

Runs `--count` agents (`AetherAgent`s, one connection each) in one process, with ids
`PREFIX-0`, `PREFIX-1`, ..., configured by the AETHER_* variables (`AgentConfig.from_env`:
the Hub's address, reconnect backoff, connect_timeout, keepalive). Every handler appends one
JSON line `{"task_id", "agent_id", "pid"}` to `--exec-log` when it starts (unbuffered, so a
SIGKILL loses nothing written): the ledger counts executions from it. A task then takes
`--task-seconds` and succeeds with the agent's id as its result; with `--hold`, a task whose
description is "hold" reports progress and never finishes, so a test can kill or cut off the
agent while it runs one. `--state-log` gets a JSON line `{"agent_id", "state", "t"}` (t:
time.time()) at every connection state change. SIGTERM/SIGINT stop every agent cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time

from aether import AetherAgent, AgentConfig, ConnectionState, TaskAssignment, TaskResult

log = logging.getLogger("fleet")


class FleetAgent(AetherAgent):
    """Logs each execution, sleeps, succeeds (or holds a "hold" task forever)."""

    def __init__(
        self,
        config: AgentConfig,
        args: argparse.Namespace,
        exec_fd: int | None,
        state_fd: int | None,
    ) -> None:
        super().__init__(config)
        self._args = args
        self._exec_fd = exec_fd
        self._state_fd = state_fd
        self.add_connection_callback(self._log_state)

    def _log_state(self, state: ConnectionState) -> None:
        if self._state_fd is not None:
            line = {"agent_id": self.config.agent_id, "state": state.value, "t": time.time()}
            os.write(self._state_fd, (json.dumps(line) + "\n").encode())

    async def handle_task(self, task: TaskAssignment) -> TaskResult:
        agent_id = self.config.agent_id
        if self._exec_fd is not None:
            line = {"task_id": task.task_id, "agent_id": agent_id, "pid": os.getpid()}
            os.write(self._exec_fd, (json.dumps(line) + "\n").encode())
        if self._args.hold and task.description == "hold":
            await self.report_progress(0.1, "holding")
            await asyncio.Event().wait()
        await asyncio.sleep(self._args.task_seconds)
        return TaskResult(task_id=task.task_id, success=True, result=agent_id.encode())


async def serve(args: argparse.Namespace) -> int:
    exec_fd = _open_log(args.exec_log)
    state_fd = _open_log(args.state_log)
    agents = [
        FleetAgent(
            AgentConfig.from_env(agent_id=f"{args.prefix}-{i}", agent_name=f"{args.prefix} {i}"),
            args,
            exec_fd,
            state_fd,
        )
        for i in range(args.count)
    ]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    starting = [asyncio.create_task(agent.start()) for agent in agents]
    status = 0
    try:
        results = await asyncio.gather(*starting, return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        for error in failed:
            log.error("an agent could not start: %s", error)
        log.info("fleet %s: %d agents started", args.prefix, len(agents) - len(failed))
        status = 1 if failed else 0
        if not failed:
            await stop.wait()
    finally:
        for task in starting:
            task.cancel()
        await asyncio.gather(*(agent.stop() for agent in agents), return_exceptions=True)
        for fd in (exec_fd, state_fd):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
    return status


def _open_log(path: str | None) -> int | None:
    """An unbuffered append-only descriptor (many processes may share the file)."""
    if not path:
        return None
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.reliability.fleet")
    parser.add_argument("--prefix", required=True, help="agent ids are PREFIX-0, PREFIX-1, ...")
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--task-seconds", type=float, default=0.01)
    parser.add_argument("--exec-log", default=None)
    parser.add_argument("--state-log", default=None)
    parser.add_argument("--hold", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    sys.exit(asyncio.run(serve(args)))


if __name__ == "__main__":
    main()
