"""AetherAgent against a real grpclib fake Hub on loopback."""

from __future__ import annotations

import asyncio
import logging

import pytest

from aether import (
    AetherAgent,
    AgentConfig,
    AgentStateError,
    AuthenticationError,
    ConnectionState,
    TaskAssignment,
    TaskContextError,
    TaskResult,
)
from tests.aether.conftest import SECRET, make_config
from tests.aether.fake_hub import FakeHub


class EchoAgent(AetherAgent):
    """Succeeds with the description as result."""

    async def handle_task(self, task: TaskAssignment) -> TaskResult:
        return TaskResult(task_id=task.task_id, success=True, result=task.description.encode())


class BlockingAgent(AetherAgent):
    """Each handler waits for `release`; tracks concurrency."""

    def __init__(self, config: AgentConfig) -> None:
        super().__init__(config)
        self.release = asyncio.Event()
        self.active = 0
        self.max_active = 0
        self.started: list[str] = []
        self.cancelled: list[str] = []

    async def handle_task(self, task: TaskAssignment) -> TaskResult:
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        self.started.append(task.task_id)
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled.append(task.task_id)
            raise
        finally:
            self.active -= 1
        return TaskResult(task_id=task.task_id, success=True, result=b"done")


async def until(predicate: object, timeout: float = 20.0) -> None:
    """Poll a zero-argument callable until it is true (for agent-side state)."""
    assert callable(predicate)

    async def poll() -> None:
        while not predicate():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), timeout)


def state_of(agent: AetherAgent) -> ConnectionState:
    """The agent's state (a call, so that mypy does not keep an earlier narrowing)."""
    return agent.connection_state


async def test_registration_fields_and_secret(hub: FakeHub) -> None:
    config = make_config(
        hub,
        version="1.2.3",
        capabilities={"task_types": "analysis,processing"},
        metadata={"secret": SECRET, "team": "core"},
        max_concurrent_tasks=4,
    )
    agent = EchoAgent(config)
    await agent.start()
    try:
        (request,) = hub.state.registrations
        assert request.agent_id == "test-agent"
        assert request.agent_name == "Test Agent"
        assert request.version == "1.2.3"
        assert request.capabilities == {"task_types": "analysis,processing"}
        assert request.metadata == {"team": "core"}  # the secret never travels as metadata
        assert request.secret == SECRET
        assert request.max_concurrent_tasks == 4
        assert request.sdk_version
        assert agent.registration is not None
        assert agent.registration.session_token == "token-1"
        assert agent.connection_state is ConnectionState.CONNECTED
        assert agent.is_running
        # Every later call carries the session token.
        await hub.state.wait_for(lambda: bool(hub.state.metadata_seen))
        assert hub.state.metadata_seen[0]["authorization"] == "Bearer token-1"
    finally:
        await agent.stop()
    assert [u.agent_id for u in hub.state.unregistered] == ["test-agent"]
    assert state_of(agent) is ConnectionState.CLOSED
    assert not agent.is_running


async def test_wrong_secret_fails_start_once(
    hub: FakeHub, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "sk-wrong-secret-0000"
    agent = EchoAgent(make_config(hub, metadata={"secret": wrong}, reconnect_delay=0))
    with pytest.raises(AuthenticationError) as info:
        await agent.start()
    message = str(info.value)
    assert "UNAUTHENTICATED" in message
    assert "secret" in message.lower()
    assert hub.url in message or "127.0.0.1" in message
    assert wrong not in message and wrong not in caplog.text
    assert hub.state.auth_failures == 1  # not retried
    assert agent.connection_state is ConnectionState.CLOSED


async def test_task_round_trip(hub: FakeHub) -> None:
    async with EchoAgent(make_config(hub)):
        await hub.state.submit("t1", description="hello")
        await hub.state.wait_for(lambda: "t1" in hub.state.results)
    result = hub.state.results["t1"]
    assert result.success and result.result == b"hello"


async def test_handler_exception_becomes_failed_result(
    hub: FakeHub, caplog: pytest.LogCaptureFixture
) -> None:
    class Flaky(AetherAgent):
        async def handle_task(self, task: TaskAssignment) -> TaskResult:
            if task.task_id == "bad":
                raise RuntimeError("boom in handler")
            return TaskResult(task_id=task.task_id, success=True)

    async with Flaky(make_config(hub)) as agent:
        await hub.state.submit("bad")
        await hub.state.submit("good")
        await hub.state.wait_for(lambda: {"bad", "good"} <= set(hub.state.results))
        assert agent.is_running
    bad = hub.state.results["bad"]
    assert not bad.success
    assert "RuntimeError" in bad.error_message and "boom in handler" in bad.error_message
    assert hub.state.results["good"].success
    assert "Traceback" in caplog.text and "boom in handler" in caplog.text


async def test_result_for_other_task_is_refused(
    hub: FakeHub, caplog: pytest.LogCaptureFixture
) -> None:
    class Confused(AetherAgent):
        async def handle_task(self, task: TaskAssignment) -> TaskResult:
            return TaskResult(task_id="someone-else", success=True)

    async with Confused(make_config(hub)):
        await hub.state.submit("mine")
        await hub.state.wait_for(lambda: "mine" in hub.state.results)
    result = hub.state.results["mine"]
    assert not result.success
    assert "someone-else" in result.error_message
    assert "someone-else" not in hub.state.results
    assert "refusing" in caplog.text


async def test_concurrency_limit_honoured_even_if_hub_oversends(hub: FakeHub) -> None:
    agent = BlockingAgent(make_config(hub, max_concurrent_tasks=2))
    async with agent:
        # Ask the stream for more than the agent allows: the agent must still cap it.
        for n in range(5):
            await hub.state.submit(f"t{n}")
        await until(lambda: len(agent.started) == 2)
        await asyncio.sleep(0.2)  # room for a wrongly started third handler to show up
        assert agent.max_active == 2
        agent.release.set()
        await hub.state.wait_for(lambda: len(hub.state.results) == 5)
    assert agent.max_active == 2
    assert hub.state.max_leased_seen <= 2


async def test_task_timeout_reports_cancelled_failure(hub: FakeHub) -> None:
    agent = BlockingAgent(make_config(hub, task_timeout_seconds=0.1))
    async with agent:
        await hub.state.submit("slow")
        await hub.state.wait_for(lambda: "slow" in hub.state.results)
    result = hub.state.results["slow"]
    assert not result.success and result.cancelled
    assert "timed out" in result.error_message
    assert agent.cancelled == ["slow"]


async def test_hub_cancellation_reaches_handler(hub: FakeHub) -> None:
    agent = BlockingAgent(make_config(hub))
    async with agent:
        await hub.state.submit("c1")
        await until(lambda: agent.started == ["c1"])
        await hub.state.cancel("c1")
        await hub.state.wait_for(lambda: "c1" in hub.state.results)
    result = hub.state.results["c1"]
    assert result.cancelled and not result.success and not result.released
    assert agent.cancelled == ["c1"]


async def test_repeated_assignment_of_a_finished_task_is_answered_without_rerunning(
    hub: FakeHub,
) -> None:
    """A Hub that lost an acknowledged result assigns the task again: the agent answers with
    the result it kept (the handler does not run twice), instead of staying silent."""
    calls: list[str] = []

    class Counting(AetherAgent):
        async def handle_task(self, task: TaskAssignment) -> TaskResult:
            calls.append(task.task_id)
            return TaskResult(task_id=task.task_id, success=True, result=b"first answer")

    async with Counting(make_config(hub)):
        await hub.state.submit("dup")
        await hub.state.wait_for(lambda: "dup" in hub.state.results)
        first = hub.state.results.pop("dup")  # the Hub forgets the result
        await hub.state.submit("dup")  # and assigns the task again
        await hub.state.wait_for(lambda: "dup" in hub.state.results)
        await hub.state.submit("after")
        await hub.state.wait_for(lambda: "after" in hub.state.results)
    assert calls == ["dup", "after"]
    assert hub.state.results["dup"].result == first.result == b"first answer"
    assert [r.task_id for r in hub.state.result_calls].count("dup") == 2


async def test_assignment_of_a_running_task_is_skipped(
    hub: FakeHub, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="aether.tasks")
    agent = BlockingAgent(make_config(hub))
    async with agent:
        await hub.state.submit("run")
        await until(lambda: agent.started == ["run"])
        await hub.state.submit("run")  # redelivered while the handler still runs
        await until(lambda: "it is already running" in caplog.text)
        agent.release.set()
        await hub.state.wait_for(lambda: "run" in hub.state.results)
    assert agent.started == ["run"]
    assert [r.task_id for r in hub.state.result_calls].count("run") == 1


async def test_heartbeats_carry_running_tasks(hub: FakeHub) -> None:
    agent = BlockingAgent(make_config(hub, heartbeat_interval=0.05))
    async with agent:
        await hub.state.submit("hb")
        await until(lambda: agent.started == ["hb"])
        await hub.state.wait_for(lambda: any(h.running_task_ids for h in hub.state.heartbeats))
        beat = next(h for h in hub.state.heartbeats if h.running_task_ids)
        assert beat.running_task_ids == ["hb"] and beat.active_tasks == 1
        assert beat.agent_id == "test-agent"
        agent.release.set()


async def test_hub_heartbeat_interval_overrides_config(hub: FakeHub) -> None:
    hub.state.heartbeat_interval = 7
    delays: list[float] = []
    parked = asyncio.Event()

    async def fake_sleep(delay: float) -> None:
        delays.append(delay)
        if len(delays) >= 3:
            parked.set()
            await asyncio.Event().wait()

    agent = EchoAgent(make_config(hub, heartbeat_interval=1))
    agent._sleep = fake_sleep
    async with agent:
        await asyncio.wait_for(parked.wait(), 20)
    assert delays[:3] == [7.0, 7.0, 7.0]
    assert len(hub.state.heartbeats) == 2


async def test_report_progress_inside_and_outside_handler(hub: FakeHub) -> None:
    class Progressing(AetherAgent):
        async def handle_task(self, task: TaskAssignment) -> TaskResult:
            assert await self.report_progress(0.5, "half way")
            return TaskResult(task_id=task.task_id, success=True)

    agent = Progressing(make_config(hub))
    async with agent:
        await hub.state.submit("p1")
        await hub.state.wait_for(lambda: "p1" in hub.state.results)
        with pytest.raises(TaskContextError):
            await agent.report_progress(0.1)
        with pytest.raises(ValueError, match="progress"):
            await agent.report_progress(1.5)
    (status,) = hub.state.statuses
    assert status.task_id == "p1" and status.message == "half way"
    assert status.progress == pytest.approx(0.5)


async def test_lifecycle_guards(hub: FakeHub) -> None:
    agent = EchoAgent(make_config(hub))
    await agent.stop()  # safe before start
    assert not agent.is_running
    await agent.start()
    with pytest.raises(AgentStateError, match="already started"):
        await agent.start()
    with pytest.raises(AgentStateError, match="already started"):
        await agent.run()
    await agent.stop()
    await agent.stop()  # idempotent
    assert len(hub.state.unregistered) == 1


async def test_connection_state_observable_and_hooks(hub: FakeHub) -> None:
    seen: list[ConnectionState] = []
    hooks: list[str] = []

    class Hooked(EchoAgent):
        async def on_start(self) -> None:
            hooks.append("start")

        async def on_stop(self) -> None:
            hooks.append("stop")
            raise RuntimeError("a broken hook must not break stop()")

    agent = Hooked(make_config(hub))
    agent.add_connection_callback(seen.append)

    def broken(state: ConnectionState) -> None:
        raise RuntimeError("broken callback")

    agent.add_connection_callback(broken)
    watched: list[ConnectionState] = []

    async def watch() -> None:
        async for state in agent.watch_connection():
            watched.append(state)

    watcher = asyncio.create_task(watch())
    await asyncio.sleep(0)
    await agent.start()
    await agent.stop()
    await asyncio.wait_for(watcher, 20)
    expected = [
        ConnectionState.CONNECTING,
        ConnectionState.CONNECTED,
        ConnectionState.DRAINING,
        ConnectionState.CLOSED,
    ]
    assert seen == expected
    assert watched == [ConnectionState.CLOSED, *expected]
    assert hooks == ["start", "stop"]


async def test_shutdown_finishes_running_tasks_within_grace(hub: FakeHub) -> None:
    agent = BlockingAgent(make_config(hub, shutdown_grace_seconds=20))
    await agent.start()
    await hub.state.submit("inflight")
    await until(lambda: agent.started == ["inflight"])
    stopping = asyncio.create_task(agent.stop())
    await until(lambda: agent.connection_state is ConnectionState.DRAINING)
    await hub.state.submit("late")  # must not be taken while draining
    agent.release.set()
    await asyncio.wait_for(stopping, 20)
    assert hub.state.results["inflight"].success
    assert "late" not in hub.state.results and agent.started == ["inflight"]
    assert len(hub.state.unregistered) == 1


async def test_shutdown_releases_tasks_past_grace(hub: FakeHub) -> None:
    agent = BlockingAgent(make_config(hub, shutdown_grace_seconds=0.1))
    await agent.start()
    await hub.state.submit("stuck")
    await until(lambda: agent.started == ["stuck"])
    await agent.stop()
    result = hub.state.results["stuck"]
    assert result.released and not result.success
    assert agent.cancelled == ["stuck"]
    assert len(hub.state.unregistered) == 1


async def test_sync_shutdown_stops_run(hub: FakeHub) -> None:
    agent = EchoAgent(make_config(hub))
    runner = asyncio.create_task(agent.run())
    await hub.state.wait_for(lambda: bool(hub.state.registrations))
    await until(lambda: agent.connection_state is ConnectionState.CONNECTED)
    agent.shutdown()
    await asyncio.wait_for(runner, 20)
    assert agent.connection_state is ConnectionState.CLOSED
    assert len(hub.state.unregistered) == 1
    agent.shutdown()  # a no-op once stopped


async def test_results_travel_on_one_stream(hub: FakeHub) -> None:
    async with EchoAgent(make_config(hub)) as agent:
        for n in range(20):
            await hub.state.submit(f"s{n}")
        await hub.state.wait_for(lambda: len(hub.state.results) == 20)
        await until(lambda: len(agent._outbox) == 0)
    assert hub.state.result_streams == 1
    assert len(hub.state.result_calls) == 20


async def test_results_travel_in_batches_when_the_hub_has_them(hub: FakeHub) -> None:
    hub.state.result_batches = True
    async with EchoAgent(make_config(hub)) as agent:
        for n in range(20):
            await hub.state.submit(f"b{n}")
        await hub.state.wait_for(lambda: len(hub.state.results) == 20)
        await until(lambda: len(agent._outbox) == 0)
    assert hub.state.result_streams == 1
    assert sum(hub.state.result_batches_seen) == 20  # every result once, in some batch
    assert len(hub.state.result_calls) == 20


async def test_unary_results_when_hub_has_no_stream(hub: FakeHub) -> None:
    hub.state.unary_results_only = True
    async with EchoAgent(make_config(hub)) as agent:
        await hub.state.submit("u1")
        await hub.state.submit("u2")
        await hub.state.wait_for(lambda: {"u1", "u2"} <= set(hub.state.results))
        await until(lambda: len(agent._outbox) == 0)
    assert hub.state.result_streams == 0


async def test_refused_result_is_dropped_not_retried(
    hub: FakeHub, caplog: pytest.LogCaptureFixture
) -> None:
    class Impostor(AetherAgent):
        async def handle_task(self, task: TaskAssignment) -> TaskResult:
            # Forget the lease behind the agent's back: the Hub refuses the result.
            for session in hub.state.sessions.values():
                session.leased.discard(task.task_id)
            return TaskResult(task_id=task.task_id, success=True)

    async with Impostor(make_config(hub)) as agent:
        await hub.state.submit("nolease")
        await hub.state.wait_for(lambda: bool(hub.state.result_calls))
        await until(lambda: len(agent._outbox) == 0)
        assert agent.connection_state is ConnectionState.CONNECTED
    assert "nolease" not in hub.state.results
    assert len(hub.state.result_calls) == 1
    assert "refused" in caplog.text


async def test_stop_while_still_connecting(hub: FakeHub) -> None:
    await hub.close()  # nothing listens: start() keeps retrying (max_reconnect_attempts=-1)
    agent = EchoAgent(make_config(hub, reconnect_delay=0.05))
    runner = asyncio.create_task(agent.run())
    await until(lambda: agent.connection_state is ConnectionState.CONNECTING)
    await asyncio.sleep(0.2)
    await agent.stop()
    await asyncio.wait_for(runner, 20)  # run() returns cleanly, without an error
    assert state_of(agent) is ConnectionState.CLOSED
    assert agent.error is None


async def test_shutdown_from_another_thread_waits_for_stop(hub: FakeHub) -> None:
    agent = BlockingAgent(make_config(hub))
    runner = asyncio.create_task(agent.run())
    await hub.state.submit("threaded")
    await until(lambda: agent.started == ["threaded"])
    loop = asyncio.get_running_loop()
    loop.call_later(0.2, agent.release.set)
    await asyncio.to_thread(agent.shutdown)  # blocks that thread until stopped
    assert state_of(agent) is ConnectionState.CLOSED
    assert hub.state.results["threaded"].success
    await asyncio.wait_for(runner, 20)


async def test_oversized_result_becomes_failure(hub: FakeHub) -> None:
    class Huge(AetherAgent):
        async def handle_task(self, task: TaskAssignment) -> TaskResult:
            return TaskResult(task_id=task.task_id, success=True, result=b"x" * 200_000)

    async with Huge(make_config(hub, max_message_bytes=100_000)) as agent:
        await hub.state.submit("big")
        await hub.state.wait_for(lambda: "big" in hub.state.results)
        assert agent.connection_state is ConnectionState.CONNECTED
    result = hub.state.results["big"]
    assert not result.success and "max_message_bytes" in result.error_message


async def test_handler_ignoring_cancellation_cannot_block_stop(
    hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("aether.agent._FLUSH_TIMEOUT", 0.2)
    started = asyncio.Event()
    behave = False

    class Stubborn(AetherAgent):
        async def handle_task(self, task: TaskAssignment) -> TaskResult:
            started.set()
            while not behave:
                try:
                    await asyncio.sleep(3600)
                except asyncio.CancelledError:
                    continue  # misbehaving on purpose
            return TaskResult(task_id=task.task_id, success=True)

    agent = Stubborn(make_config(hub, shutdown_grace_seconds=0.05))
    await agent.start()
    await hub.state.submit("stubborn")
    await asyncio.wait_for(started.wait(), 20)
    await asyncio.wait_for(agent.stop(), 30)
    assert state_of(agent) is ConnectionState.CLOSED
    # Let the abandoned handler end, so that the test leaves no task behind.
    behave = True
    leftovers = list(agent._runner._tasks)
    for task in leftovers:
        task.cancel()
    await asyncio.wait(leftovers, timeout=5)
