"""One Hub per `--db` file: a second Hub on the same file refuses to start, naming it and
the holder; the lock goes with the process that held it, also on `kill -9`."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import grpclib.client
import pytest

from aether._wire import client, pb
from aether_hub.dblock import DatabaseInUseError, DatabaseLock, lock_path
from aether_hub.server import HubServer
from aether_hub.settings import HubConfig
from tests.hubserver.test_hub_process import hub_process, run_cli

WAIT = 30.0


async def _submit(port: int, description: str) -> str:
    channel = grpclib.client.Channel("127.0.0.1", port)
    try:
        stub = client.TaskServiceStub(channel)
        reply = await asyncio.wait_for(
            stub.submit_task(pb.SubmitTaskRequest(description=description)), WAIT
        )
        return reply.task_id
    finally:
        channel.close()


async def test_a_second_hub_on_the_same_db_exits_naming_the_file_and_the_holder(
    tmp_path: Path,
) -> None:
    db = tmp_path / "hub.sqlite3"
    async with hub_process("--db", str(db), "--dev") as first:
        before = await _submit(first.port, "before")
        code, _, err = await run_cli("hub", "--port", "0", "--db", str(db), "--dev")
        assert code == 1, err
        assert f"the Hub database {db} is in use by another Hub" in err
        assert f"pid {first.proc.pid}" in err
        assert str(lock_path(db)) in err and "Traceback" not in err
        # The first Hub never noticed: it still serves, with its tasks.
        after = await _submit(first.port, "after")
        assert after != before
        assert first.proc.returncode is None
        assert await first.stop(signal.SIGTERM) == 0
    # Stopped cleanly: the next Hub starts on the file and has both tasks.
    async with hub_process("--db", str(db), "--dev") as second:
        channel = grpclib.client.Channel("127.0.0.1", second.port)
        try:
            stub = client.TaskServiceStub(channel)
            listed = await stub.list_tasks(pb.ListTasksRequest())
            assert {t.task_id for t in listed.tasks} == {before, after}
        finally:
            channel.close()
        assert await second.stop(signal.SIGTERM) == 0


async def test_after_kill_9_a_new_hub_starts_on_the_same_db(tmp_path: Path) -> None:
    db = tmp_path / "hub.sqlite3"
    async with hub_process("--db", str(db), "--dev") as first:
        task_id = await _submit(first.port, "kept")
        assert await first.stop(signal.SIGKILL) == -signal.SIGKILL
    # The lock file is still there, with the dead holder's pid; the lock itself is gone.
    assert lock_path(db).exists()
    async with hub_process("--db", str(db), "--dev") as second:
        channel = grpclib.client.Channel("127.0.0.1", second.port)
        try:
            stub = client.TaskServiceStub(channel)
            task = await stub.get_task(pb.GetTaskRequest(task_id=task_id))
            assert task.state == pb.TaskState.PENDING
        finally:
            channel.close()
        code, _, err = await run_cli("hub", "--port", "0", "--db", str(db), "--dev")
        assert code == 1 and f"pid {second.proc.pid}" in err, err
        assert await second.stop(signal.SIGTERM) == 0


async def test_two_hub_servers_in_one_process_cannot_share_a_db(tmp_path: Path) -> None:
    db = str(tmp_path / "hub.sqlite3")
    first = HubServer(HubConfig(port=0, dev=True, db_path=db))
    await first.start()
    try:
        second = HubServer(HubConfig(port=0, dev=True, db_path=db))
        with pytest.raises(DatabaseInUseError, match="is in use by another Hub"):
            await second.start()
        await second.stop()  # nothing to stop, and it must not drop the first one's lock
        with pytest.raises(DatabaseInUseError):
            DatabaseLock(db).acquire()
    finally:
        await first.stop()
    third = HubServer(HubConfig(port=0, dev=True, db_path=db))
    await third.start()  # stop() let the lock go
    await third.stop()


def test_lock_is_released_and_taken_again(tmp_path: Path) -> None:
    db = tmp_path / "sub" / "hub.sqlite3"
    lock = DatabaseLock(db)
    lock.acquire()
    assert lock.path == tmp_path / "sub" / "hub.sqlite3.lock"
    assert repr(lock).endswith("held=True)")
    other = DatabaseLock(db)
    with pytest.raises(DatabaseInUseError) as info:
        other.acquire()
    assert isinstance(info.value, OSError)  # `aether hub` reports it and exits 1
    assert not other.held
    lock.release()
    lock.release()  # idempotent
    other.acquire()
    assert (other.held, repr(lock).endswith("held=False)")) == (True, True)
    other.release()
