"""The result outbox: a Hub that cannot store results now is not a lost session."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator
from typing import cast

from grpclib.const import Status

from aether import AetherConnectionError, AgentConfig, HubError
from aether._outbox import Outbox
from aether._wire import pb
from aether.client import AgentClient


class ResultsHub:
    """The part of AgentClient the outbox uses: a SubmitResults stream that first ends
    `refusals` times with the given error after taking one result, then acknowledges."""

    def __init__(self, refusals: int, error: AetherConnectionError) -> None:
        self.config = AgentConfig(
            agent_id="outbox", agent_name="Outbox", reconnect_delay=0.01, max_reconnect_delay=0.05
        )
        self.refusals = refusals
        self.error = error
        self.streams = 0

    async def _submit_result_batches_wire(
        self, batches: AsyncIterable[pb.TaskResultBatch]
    ) -> AsyncIterator[pb.SubmitResultBatchResponse]:
        # A Hub that predates SubmitResultBatches: the outbox falls back to SubmitResults.
        none: list[pb.SubmitResultBatchResponse] = []
        for answer in none:
            yield answer
        raise HubError("no SubmitResultBatches", status=Status.UNIMPLEMENTED)

    async def _submit_results_wire(
        self, results: AsyncIterable[pb.TaskResult]
    ) -> AsyncIterator[pb.SubmitResultResponse]:
        self.streams += 1
        refuse = self.refusals > 0
        self.refusals -= 1
        async for result in results:
            if refuse:
                raise self.error
            yield pb.SubmitResultResponse(task_id=result.task_id, accepted=True)


def unavailable() -> AetherConnectionError:
    # What the SDK makes of the Hub's UNAVAILABLE answer (a full disk).
    return AetherConnectionError(
        "SubmitResults failed: the Hub is unavailable (its database cannot be written)",
        hub_url="127.0.0.1:1",
        reason="unavailable",
    )


async def test_results_the_hub_cannot_store_now_are_sent_again_on_the_same_session() -> None:
    lost: list[str] = []
    hub = ResultsHub(refusals=3, error=unavailable())
    outbox = Outbox(cast(AgentClient, hub), lost.append)
    outbox.put(pb.TaskResult(task_id="t1", success=True))
    session = asyncio.create_task(outbox.run_session())
    try:
        assert await outbox.wait_empty(10)
        outbox.put(pb.TaskResult(task_id="t2", success=True))  # the stream goes on
        assert await outbox.wait_empty(10)
    finally:
        outbox.end_session()
        await asyncio.wait_for(session, 10)
    assert lost == []  # the session was never given up
    assert hub.streams == 4  # three refused streams, then one that took both


async def test_a_broken_result_stream_still_loses_the_session() -> None:
    lost: list[str] = []
    broken = AetherConnectionError("connection lost", hub_url="127.0.0.1:1", reason="lost")
    outbox = Outbox(cast(AgentClient, ResultsHub(refusals=1, error=broken)), lost.append)
    outbox.put(pb.TaskResult(task_id="t1", success=True))
    await asyncio.wait_for(outbox.run_session(), 10)
    assert len(lost) == 1 and "result stream failed" in lost[0]
    assert "t1" in outbox  # kept for the next session


class BatchHub:
    """A Hub with SubmitResultBatches: records each batch, acknowledges every result."""

    def __init__(self, max_message_bytes: int = 4 * 1024 * 1024) -> None:
        self.config = AgentConfig(
            agent_id="outbox", agent_name="Outbox", max_message_bytes=max_message_bytes
        )
        self.batches: list[list[str]] = []

    async def _submit_result_batches_wire(
        self, batches: AsyncIterable[pb.TaskResultBatch]
    ) -> AsyncIterator[pb.SubmitResultBatchResponse]:
        async for batch in batches:
            self.batches.append([r.task_id for r in batch.results])
            yield pb.SubmitResultBatchResponse(
                acks=[
                    pb.SubmitResultResponse(task_id=r.task_id, accepted=True) for r in batch.results
                ]
            )


async def test_results_ready_together_go_in_one_message() -> None:
    lost: list[str] = []
    hub = BatchHub()
    outbox = Outbox(cast(AgentClient, hub), lost.append)
    for i in range(5):  # kept before the session: all go in the first message
        outbox.put(pb.TaskResult(task_id=f"a{i}", success=True))
    session = asyncio.create_task(outbox.run_session())
    try:
        assert await outbox.wait_empty(10)
        for i in range(3):  # finished in one pass of the loop: one message
            outbox.put(pb.TaskResult(task_id=f"b{i}", success=True))
        assert await outbox.wait_empty(10)
    finally:
        outbox.end_session()
        await asyncio.wait_for(session, 10)
    assert lost == []
    assert hub.batches == [[f"a{i}" for i in range(5)], [f"b{i}" for i in range(3)]]


async def test_a_batch_stays_within_half_the_message_limit() -> None:
    hub = BatchHub(max_message_bytes=4096)
    lost: list[str] = []
    outbox = Outbox(cast(AgentClient, hub), lost.append)
    for i in range(6):  # about 1 KiB each: two fit in 2 KiB
        outbox.put(pb.TaskResult(task_id=f"r{i}", success=True, result=b"x" * 900))
    outbox.put(pb.TaskResult(task_id="big", success=True, result=b"x" * 3000))  # alone
    session = asyncio.create_task(outbox.run_session())
    try:
        assert await outbox.wait_empty(10)
    finally:
        outbox.end_session()
        await asyncio.wait_for(session, 10)
    assert hub.batches == [["r0", "r1"], ["r2", "r3"], ["r4", "r5"], ["big"]]
