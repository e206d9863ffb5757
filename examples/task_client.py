"""Hand work to agents from your own code: submit 100 tasks with `aether.TaskClient`,
follow them all at once until they finish, then list them.

Against `aether hub --dev`:

    python examples/task_client.py --hub-url localhost:50051

With no `--task-type`, the script starts a small echo agent in this process (task type
`task_client_echo`) so that it runs anywhere a Hub runs. With `--task-type analysis` it
sends the tasks to the agents you run instead (e.g. `python examples/quickstart.py`).
The Hub's client token, if it wants one, is read from `AETHER_CLIENT_TOKEN`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import uuid
from collections import Counter

from aether_sdk import (
    TERMINAL_TASK_STATES,
    AetherAgent,
    AetherError,
    AgentConfig,
    SubmittedTask,
    Task,
    TaskAssignment,
    TaskClient,
    TaskResult,
    TaskState,
)

ECHO_TASK_TYPE = "task_client_echo"


class EchoAgent(AetherAgent):
    """Answers every task with its payload, after reporting that it started."""

    async def handle_task(self, task: TaskAssignment) -> TaskResult:
        await self.report_progress(0.5, "echoing")
        return TaskResult(task_id=task.task_id, success=True, result=b"echo: " + task.payload)


class Tally:
    """How many of the followed tasks have finished, printed every `every` of them."""

    def __init__(self, total: int, every: int = 10) -> None:
        self.total = total
        self.every = every
        self.finished = 0

    def one_finished(self) -> None:
        self.finished += 1
        if self.finished % self.every == 0 or self.finished == self.total:
            print(f"finished {self.finished}/{self.total}", flush=True)


async def follow(task: SubmittedTask, tally: Tally) -> Task:
    """Watch one task until it is final; the final task."""
    last: Task | None = None
    async for update in task.watch():
        last = update
    assert last is not None and last.state in TERMINAL_TASK_STATES  # watch() ends there
    tally.one_finished()
    return last


async def run(hub_url: str, count: int, task_type: str | None, timeout: float) -> int:
    workflow_id = f"task-client-demo-{uuid.uuid4().hex[:8]}"
    agent: EchoAgent | None = None
    if task_type is None:
        task_type = ECHO_TASK_TYPE
        agent = EchoAgent(
            AgentConfig(
                agent_id=f"task-client-echo-{workflow_id[-8:]}",
                agent_name="TaskClient example echo agent",
                hub_url=hub_url,
                capabilities={"task_types": ECHO_TASK_TYPE},
                max_concurrent_tasks=20,
                max_reconnect_attempts=0,
            )
        )
        await agent.start()
        print(f"started echo agent {agent.config.agent_id}")
    try:
        async with TaskClient(hub_url, token=os.environ.get("AETHER_CLIENT_TOKEN")) as client:
            return await submit_follow_list(client, count, task_type, workflow_id, timeout)
    finally:
        if agent is not None:
            await agent.stop()


async def submit_follow_list(
    client: TaskClient, count: int, task_type: str, workflow_id: str, timeout: float
) -> int:
    """The example proper: 0 when every task succeeded and the listing shows them all."""
    print(f"submitting {count} tasks of type {task_type!r} (workflow {workflow_id})")
    submitted = await asyncio.gather(
        *(
            client.submit(
                f"item {i}",
                payload=f"item {i}".encode(),
                task_type=task_type,
                workflow_id=workflow_id,
                metadata={"index": str(i)},
            )
            for i in range(count)
        )
    )

    # One watch per task, all at once, over the client's one connection.
    tally = Tally(count)
    finished = await asyncio.wait_for(
        asyncio.gather(*(follow(task, tally) for task in submitted)), timeout
    )
    states = Counter(task.state for task in finished)
    for state, n in sorted(states.items()):
        print(f"{n}/{count} {state.name.lower()}")

    # ListTasks pages through the workflow's tasks, 25 per call here.
    listed = [
        t async for t in client.list(workflow_id=workflow_id, page_size=25, include_payloads=True)
    ]
    print(f"listed {len(listed)} tasks of workflow {workflow_id}, newest first:")
    for task in listed[:3]:
        print(f"  {task.task_id}  {task.state.name.lower():<9}  {task.result.decode()}")

    if {t.task_id for t in listed} != {t.task_id for t in submitted}:
        print("the listing does not match the submitted tasks", file=sys.stderr)
        return 1
    return 0 if states[TaskState.SUCCEEDED] == count else 1


class Options(argparse.Namespace):
    """The command line, typed."""

    hub_url: str
    count: int
    task_type: str | None
    timeout: float


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--hub-url",
        default=os.environ.get("AETHER_HUB_URL", "localhost:50051"),
        help="the Hub's address (default: $AETHER_HUB_URL or localhost:50051)",
    )
    parser.add_argument("--count", type=int, default=100, help="tasks to submit (default 100)")
    parser.add_argument(
        "--task-type",
        help="send the tasks to your agents of this type (default: start an echo agent here)",
    )
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="seconds to wait for all tasks"
    )
    args = parser.parse_args(namespace=Options())
    try:
        return asyncio.run(run(args.hub_url, args.count, args.task_type, args.timeout))
    except AetherError as exc:
        print(f"task_client: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except asyncio.TimeoutError:
        print(f"task_client: the tasks did not all finish within {args.timeout} s", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
