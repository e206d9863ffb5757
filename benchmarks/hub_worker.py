"""A dev Hub (`HubServer`) in its own process, driven by the benchmark over stdin/stdout.

    python -m benchmarks.hub_worker

Prints `{"port": P}` once listening, then answers one JSON line per command line:
`{"cmd": "run", "n": N}` → `{"seconds": S}`; `{"cmd": "latency", "n": N}` →
`{"submitted": {task_id: perf_counter}}`; `{"cmd": "rss"}` → `{"rss_kib": K}`;
`{"cmd": "quit"}` → `{"bye": true}`, then stops the Hub and exits. Logs go to stderr.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys

from aether_hub.server import HubServer
from aether_hub.settings import HubConfig
from benchmarks.hubside import rss_kib, run_tasks, timed_submissions


def _reply(obj: object) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def serve() -> None:
    """Run the Hub and answer commands until `quit` or end of input."""
    hub = HubServer(HubConfig(port=0, dev=True))
    await hub.start()
    try:
        _reply({"port": hub.port})
        while True:
            line = await asyncio.to_thread(sys.stdin.readline)
            if not line:
                return
            command = json.loads(line)
            cmd = command.get("cmd")
            if cmd == "run":
                _reply({"seconds": await run_tasks(hub.queue, int(command["n"]))})
            elif cmd == "latency":
                _reply({"submitted": await timed_submissions(hub.queue, int(command["n"]))})
            elif cmd == "rss":
                _reply({"rss_kib": rss_kib(), "tasks_held": len(hub.queue)})
            elif cmd == "quit":
                _reply({"bye": True})
                return
            else:
                _reply({"error": f"unknown command {cmd!r}"})
    finally:
        await hub.stop()


def main() -> int:
    """Entry point of the worker process."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    asyncio.run(serve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
