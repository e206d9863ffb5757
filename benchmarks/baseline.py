"""The baseline of the public-API benchmark: a bare grpclib broker, agents and client.

    python -m benchmarks.baseline broker
    python -m benchmarks.baseline agents --url HOST:PORT [--agents N] [--concurrency C]

The same message classes as the Hub (`aether_api.v1.messages`) and the same shape as the
public-API run (a client process submitting one unary RPC per task, a broker process, an
agent process with one server stream of assignments and one stream of results per
agent), with none of the Hub's logic: no sessions, authentication, routing keys,
priorities, leases, retries, persistence, metrics or tracing; the agents are plain grpclib
loops, not `AetherAgent`s, and the client is a plain grpclib channel, not `TaskClient`.
What it costs is what grpclib and the codec cost: the floor ours is compared
with (benchmarks/api_e2e.py prints ours / baseline).

The broker prints `Baseline broker listening on 127.0.0.1:PORT` on stderr (as the Hub
does) and serves until terminated; `agents` prints `ready` once every stream is open and
runs until its standard input closes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import itertools
import signal
import sys
import time
from collections.abc import AsyncIterator

import grpclib.client
import grpclib.const
import grpclib.server

from aether._wire import pb

__all__ = ("BaselineClient", "Broker")

_PREFIX = "/aetherbench.Broker/"
_U = grpclib.const.Cardinality.UNARY_UNARY
_S = grpclib.const.Cardinality.UNARY_STREAM
_SS = grpclib.const.Cardinality.STREAM_STREAM


class Broker:
    """Submit → queue → the next agent stream with room → result; nothing else."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[pb.TaskAssignment] = asyncio.Queue()
        self._ids = itertools.count(1)
        self._waiting: dict[str, asyncio.Future[pb.TaskResult]] = {}
        self._slots: dict[str, asyncio.Semaphore] = {}  # task id -> its stream's slots
        self._running = 0

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        return {
            _PREFIX + "Submit": grpclib.const.Handler(
                self.submit, _U, pb.SubmitTaskRequest, pb.SubmitTaskResponse
            ),
            _PREFIX + "Stream": grpclib.const.Handler(
                self.stream, _S, pb.StreamTasksRequest, pb.TaskStreamEvent
            ),
            _PREFIX + "Results": grpclib.const.Handler(
                self.results, _SS, pb.TaskResult, pb.SubmitResultResponse
            ),
            _PREFIX + "Wait": grpclib.const.Handler(self.wait, _U, pb.GetTaskRequest, pb.Task),
            _PREFIX + "Stats": grpclib.const.Handler(
                self.stats, _U, pb.GetQueueStatsRequest, pb.QueueStats
            ),
        }

    async def submit(self, stream: grpclib.server.Stream[pb.SubmitTaskRequest, object]) -> None:
        request = await stream.recv_message()
        assert request is not None
        task_id = f"{next(self._ids):024x}"
        self._waiting[task_id] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(
            pb.TaskAssignment(
                task_id=task_id,
                description=request.description,
                payload=request.payload,
                task_type=request.task_type,
                attempt=1,
                priority=request.priority,
                metadata=request.metadata,
                created_at=datetime.datetime.now(datetime.timezone.utc),
            )
        )
        await stream.send_message(pb.SubmitTaskResponse(task_id=task_id))

    async def stream(self, stream: grpclib.server.Stream[pb.StreamTasksRequest, object]) -> None:
        request = await stream.recv_message()
        assert request is not None
        slots = asyncio.Semaphore(request.max_concurrent_tasks or 1)
        while True:
            await slots.acquire()
            assignment = await self._queue.get()
            self._slots[assignment.task_id] = slots
            self._running += 1
            await stream.send_message(pb.TaskStreamEvent(assignment=assignment))

    async def results(self, stream: grpclib.server.Stream[pb.TaskResult, object]) -> None:
        async for result in stream:
            self._result(result)
            await stream.send_message(
                pb.SubmitResultResponse(task_id=result.task_id, accepted=True)
            )

    def _result(self, result: pb.TaskResult) -> None:
        slots = self._slots.pop(result.task_id, None)
        if slots is not None:
            self._running -= 1
            slots.release()
        waiter = self._waiting.get(result.task_id)  # `wait` may come later
        if waiter is not None and not waiter.done():
            waiter.set_result(result)

    async def wait(self, stream: grpclib.server.Stream[pb.GetTaskRequest, object]) -> None:
        request = await stream.recv_message()
        assert request is not None
        waiter = self._waiting.get(request.task_id)
        result = await waiter if waiter is not None else pb.TaskResult()
        self._waiting.pop(request.task_id, None)
        await stream.send_message(
            pb.Task(
                task_id=request.task_id,
                state=pb.TaskState.SUCCEEDED,
                result=result.result,
                metrics=result.metrics,
            )
        )

    async def stats(self, stream: grpclib.server.Stream[pb.GetQueueStatsRequest, object]) -> None:
        await stream.recv_message()
        await stream.send_message(pb.QueueStats(pending=self._queue.qsize(), running=self._running))


class BaselineClient:
    """A plain grpclib client of the broker (the counterpart of `TaskClient`)."""

    def __init__(self, url: str) -> None:
        host, _, port = url.rpartition(":")
        self._channel = grpclib.client.Channel(host, int(port))

    async def __aenter__(self) -> BaselineClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._channel.close()

    async def _unary(self, method: str, request: object, reply_type: type[object]) -> object:
        async with self._channel.request(_PREFIX + method, _U, type(request), reply_type) as stream:
            await stream.send_message(request, end=True)
            reply = await stream.recv_message()
            await stream.recv_trailing_metadata()
            return reply

    async def submit(self, description: str, *, task_type: str, payload: bytes) -> str:
        """Submit one task; its id."""
        request = pb.SubmitTaskRequest(
            description=description, task_type=task_type, payload=payload
        )
        reply = await self._unary("Submit", request, pb.SubmitTaskResponse)
        assert isinstance(reply, pb.SubmitTaskResponse)
        return reply.task_id

    async def wait(self, task_id: str) -> pb.Task:
        """The task once its result arrived."""
        reply = await self._unary("Wait", pb.GetTaskRequest(task_id=task_id), pb.Task)
        assert isinstance(reply, pb.Task)
        return reply

    async def idle(self) -> bool:
        """Whether nothing is queued or running."""
        reply = await self._unary("Stats", pb.GetQueueStatsRequest(), pb.QueueStats)
        assert isinstance(reply, pb.QueueStats)
        return reply.pending == 0 and reply.running == 0


async def _serve_broker() -> None:
    server = grpclib.server.Server([Broker()])
    await server.start("127.0.0.1", 0)
    # grpclib keeps its asyncio server private; its listening socket names the port.
    sockets = getattr(getattr(server, "_server", None), "sockets", ())
    port = int(next(iter(sockets)).getsockname()[1])
    print(f"Baseline broker listening on 127.0.0.1:{port}", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    await server.wait_closed()


async def _agent(channel: grpclib.client.Channel, concurrency: int, ready: asyncio.Event) -> None:
    """One agent: a stream of assignments in, a stream of results out (as the SDK's
    agent sends them); the broker sends at most `concurrency` unanswered tasks."""
    results: asyncio.Queue[pb.TaskResult] = asyncio.Queue()

    async def send_results() -> None:
        async with channel.request(
            _PREFIX + "Results", _SS, pb.TaskResult, pb.SubmitResultResponse
        ) as call:

            async def acks() -> None:
                while await call.recv_message() is not None:
                    pass

            reader = asyncio.create_task(acks())
            try:
                while True:
                    await call.send_message(await results.get())
            finally:
                reader.cancel()

    sender = asyncio.create_task(send_results())
    try:
        async with channel.request(
            _PREFIX + "Stream", _S, pb.StreamTasksRequest, pb.TaskStreamEvent
        ) as stream:
            await stream.send_message(
                pb.StreamTasksRequest(max_concurrent_tasks=concurrency), end=True
            )
            ready.set()  # the broker sends its headers with the first assignment
            async for event in _events(stream):
                if event.assignment is not None:
                    arrived = time.perf_counter()
                    results.put_nowait(
                        pb.TaskResult(
                            task_id=event.assignment.task_id,
                            success=True,
                            result=b"ok",
                            metrics={"arrived": repr(arrived)},
                        )
                    )
    finally:
        sender.cancel()


async def _events(
    stream: grpclib.client.Stream[pb.StreamTasksRequest, pb.TaskStreamEvent],
) -> AsyncIterator[pb.TaskStreamEvent]:
    while (event := await stream.recv_message()) is not None:
        yield event


async def _serve_agents(url: str, agents: int, concurrency: int) -> None:
    host, _, port = url.rpartition(":")
    channels = [grpclib.client.Channel(host, int(port)) for _ in range(agents)]
    readies = [asyncio.Event() for _ in range(agents)]
    tasks = [
        asyncio.create_task(_agent(ch, concurrency, ready))
        for ch, ready in zip(channels, readies, strict=True)
    ]
    await asyncio.gather(*(ready.wait() for ready in readies))
    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.read)
    for task in tasks:
        task.cancel()
    with contextlib.suppress(BaseException):
        await asyncio.gather(*tasks, return_exceptions=True)
    for ch in channels:
        ch.close()


def main(argv: list[str] | None = None) -> int:
    """`broker` or `agents`."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.baseline")
    sub = parser.add_subparsers(dest="role", required=True)
    sub.add_parser("broker")
    agents = sub.add_parser("agents")
    agents.add_argument("--url", required=True)
    agents.add_argument("--agents", type=int, default=1)
    agents.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args(argv)
    if args.role == "broker":
        asyncio.run(_serve_broker())
    else:
        asyncio.run(_serve_agents(args.url, args.agents, args.concurrency))
    return 0


if __name__ == "__main__":
    sys.exit(main())
