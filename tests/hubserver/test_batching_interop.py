"""A stock grpcio client (stubs from stock protoc) against the real Hub: SubmitTasks,
SubmitTask, and the task stream with and without batched assignments. Runs in a
subprocess: in this process `aether` is our SDK."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from pathlib import Path

from aether._wire import pb
from tests.generated import genpkgs
from tests.hubserver.hubkit import running_hub


def _stock_api_stubs() -> Path:
    out = genpkgs.scratch_dir("api-stock-batch-")
    files = [f for f in genpkgs.proto_files(genpkgs.API_PROTO_ROOT) if f.startswith("aether/")]
    genpkgs.run_protoc(genpkgs.API_PROTO_ROOT, files, out=out, grpc=True)
    for package in (out / "aether", out / "aether" / "v1"):
        (package / "__init__.py").touch()
    return out


_CLIENT = """
import json, sys
import grpc
from aether.v1 import agent_pb2, agent_pb2_grpc, tasks_pb2, tasks_pb2_grpc
assert tasks_pb2.__file__.startswith(sys.argv[2]), tasks_pb2.__file__

channel = grpc.insecure_channel("127.0.0.1:" + sys.argv[1], options=[("grpc.enable_http_proxy", 0)])
tasks = tasks_pb2_grpc.TaskServiceStub(channel)
agents = agent_pb2_grpc.AgentServiceStub(channel)
out = {}
batch = tasks.SubmitTasks(tasks_pb2.SubmitTasksRequest(tasks=[
    tasks_pb2.SubmitTaskRequest(description="one", task_type="old"),
    tasks_pb2.SubmitTaskRequest(description="bad", task_type="a,b"),
    tasks_pb2.SubmitTaskRequest(description="two", task_type="old"),
]), timeout=30)
out["batch"] = [r.WhichOneof("outcome") for r in batch.results]
out["error_code"] = batch.results[1].error.code
three = tasks_pb2.SubmitTaskRequest(description="three", task_type="old")
single = tasks.SubmitTask(three, timeout=30)
first, _, second = batch.results
out["ids"] = [first.submitted.task_id, second.submitted.task_id, single.task_id]

def stream(agent_id, task_type, batch_bytes, n):
    reg = agents.Register(agent_pb2.RegisterRequest(
        agent_id=agent_id, max_concurrent_tasks=n, capabilities={"task_types": task_type}
    ), timeout=30)
    md = [("authorization", "Bearer " + reg.session_token)]
    request = agent_pb2.StreamTasksRequest(agent_id=agent_id, assignment_batch_bytes=batch_bytes)
    call = agents.StreamTasks(request, metadata=md, timeout=30)
    events, got = [], []
    for event in call:
        kind = event.WhichOneof("event")
        if kind == "assignment":
            ids = [event.assignment.task_id]
        else:
            ids = [a.task_id for a in event.assignments]
        events.append(len(ids) if kind is None else kind)
        got += ids
        if len(got) == n:
            break
    call.cancel()
    acks = agents.SubmitResults(iter([agent_pb2.TaskResult(task_id=t, success=True) for t in got]),
                                metadata=md, timeout=30)
    return events, got, [a.accepted for a in acks]

out["old"] = stream("old-agent", "old", 0, 3)
new_tasks = [tasks_pb2.SubmitTaskRequest(description=str(i), task_type="new") for i in range(4)]
news = tasks.SubmitTasks(tasks_pb2.SubmitTasksRequest(tasks=new_tasks), timeout=30)
out["new_ids"] = [r.submitted.task_id for r in news.results]
out["new"] = stream("new-agent", "new", 65536, 4)
print(json.dumps(out))
"""


async def test_stock_grpcio_client_against_the_hub() -> None:
    stubs = await asyncio.to_thread(_stock_api_stubs)
    try:
        env = {**os.environ, "PYTHONPATH": str(stubs)}
        async with running_hub() as hub:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-c", _CLIENT, str(hub.port), str(stubs),
                cwd=str(stubs), env=env,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=90)
            assert process.returncode == 0, stderr.decode()
            out = json.loads(stdout)
            assert out["batch"] == ["submitted", "error", "submitted"]
            assert out["error_code"] == 3  # INVALID_ARGUMENT
            # An agent that does not ask gets one assignment per event ...
            old_events, old_ids, old_acks = out["old"]
            assert old_events == ["assignment"] * 3 and old_ids == out["ids"]
            assert old_acks == [True] * 3
            # ... one that asks gets the tasks leased together in one event.
            new_events, new_ids, new_acks = out["new"]
            assert new_events == [4] and new_ids == out["new_ids"]
            assert new_acks == [True] * 4
            for task_id in old_ids + new_ids:
                rec = hub.queue.get(task_id)
                assert rec is not None and rec.state == pb.TaskState.SUCCEEDED
    finally:
        shutil.rmtree(stubs, ignore_errors=True)
