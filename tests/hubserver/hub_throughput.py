"""Rough throughput and dispatch latency of a dev Hub process (not a test; run by hand).

    python -m tests.hubserver.hub_throughput [N]

Starts `python -m aether_hub --port 0 --dev` as a subprocess, then with the raw
generated stubs (no SDK): submits N tasks with concurrent SubmitTask calls, drains them
through one session's StreamTasks + SubmitResults streams, and measures submit-to-
assignment latency one task at a time. The numbers include this client's own costs.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import grpclib.client

from aether._wire import client, pb


async def _run(n: int) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "aether_hub", "--port", "0", "--dev"],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    port = 0
    for line in proc.stderr:
        match = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
        if match:
            port = int(match.group(1))
            break
    channel = grpclib.client.Channel("127.0.0.1", port)
    try:
        agents = client.AgentServiceStub(channel)
        tasks = client.TaskServiceStub(channel)
        reg = await agents.register(pb.RegisterRequest(agent_id="bench", max_concurrent_tasks=500))
        md = {"authorization": f"Bearer {reg.session_token}"}

        gate = asyncio.Semaphore(64)

        async def submit() -> None:
            async with gate:
                await tasks.submit_task(pb.SubmitTaskRequest(description="x", payload=b"p" * 100))

        start = time.perf_counter()
        await asyncio.gather(*(submit() for _ in range(n)))
        took = time.perf_counter() - start
        print(f"SubmitTask: {n} in {took:.2f} s = {n / took:,.0f}/s")

        results: asyncio.Queue[pb.TaskResult] = asyncio.Queue()
        acked = asyncio.Event()

        async def outgoing() -> AsyncIterator[pb.TaskResult]:
            for _ in range(n):
                yield await results.get()

        async def acks() -> None:
            count = 0
            async for _ack in agents.submit_results(outgoing(), metadata=md):
                count += 1
                if count == n:
                    acked.set()

        start = time.perf_counter()
        ack_task = asyncio.create_task(acks())
        got = 0
        stream = agents.stream_tasks(pb.StreamTasksRequest(agent_id="bench"), metadata=md)
        async for event in stream:
            assert event.assignment is not None
            results.put_nowait(pb.TaskResult(task_id=event.assignment.task_id, success=True))
            got += 1
            if got == n:
                break
        await acked.wait()
        took = time.perf_counter() - start
        await ack_task
        print(f"dispatch + result: {n} in {took:.2f} s = {n / took:,.0f} tasks/s")

        latencies: list[float] = []
        stream = agents.stream_tasks(pb.StreamTasksRequest(agent_id="bench"), metadata=md)
        for _ in range(300):
            start = time.perf_counter()
            sent = asyncio.ensure_future(tasks.submit_task(pb.SubmitTaskRequest()))
            event = await stream.__anext__()
            latencies.append(time.perf_counter() - start)
            await sent
            assert event.assignment is not None
            await agents.submit_result(
                pb.TaskResult(task_id=event.assignment.task_id, success=True), metadata=md
            )
        latencies.sort()
        p50 = latencies[len(latencies) // 2] * 1000
        p99 = latencies[int(len(latencies) * 0.99)] * 1000
        print(f"submit -> assignment: p50 {p50:.3f} ms, p99 {p99:.3f} ms")
    finally:
        channel.close()
        proc.terminate()
        proc.wait()


def main() -> None:
    """Run with N tasks (default 20000)."""
    asyncio.run(_run(int(sys.argv[1]) if len(sys.argv) > 1 else 20000))


if __name__ == "__main__":
    main()
