"""`aether task`: submit, follow, list and cancel tasks on an Aether Hub.

```
aether task submit DESCRIPTION [--payload @FILE|-|TEXT] [--type T] [--agent ID]
                   [--priority N] [--metadata K=V ...] [--workflow W] [--wait]
aether task get ID
aether task list [--state S] [--agent A] [--type T] [--limit N] [--payloads]
aether task cancel ID [--reason TEXT]
aether task watch ID
```

A thin command line over `aether.TaskClient`. Every command takes ``--hub-url URL``
(default ``$AETHER_HUB_URL`` or ``localhost:50051``; the address grammar of
`aether.address`: ``grpcs://`` or ``https://`` for TLS), ``--token-env VAR`` (the
environment variable holding a client token, default ``AETHER_CLIENT_TOKEN``, sent only
when set), the TLS settings ``--tls-ca-file``, ``--tls-cert-file``, ``--tls-key-file`` and
``--tls-server-name`` (default: the ``AETHER_TLS_*`` variables agents read), ``--json``
(machine-readable output) and ``--timeout SECONDS`` (per call).

``submit`` prints the new task's id; with ``--wait`` it follows the task (a live progress
bar on stderr when stderr is a terminal, plain status lines otherwise) and then prints the
result. ``watch`` follows a task the same way; with ``--json`` it prints one JSON object
per change (NDJSON). ``list`` prints a table (drawn with rich on a terminal).

Exit status: 0 success; 1 the task failed, was cancelled or timed out, or was not found;
2 usage errors; 3 the Hub could not be reached or refused the call; 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime
import json
import os
import sys
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, TextIO

from grpclib.const import Status

from aether.address import DEFAULT_HUB_URL, HubAddress, parse_hub_urls
from aether.config import AgentConfig
from aether.errors import (
    AetherConfigError,
    AetherConnectionError,
    AetherError,
    AuthenticationError,
    HubError,
    TaskNotFoundError,
)
from aether.models import TERMINAL_TASK_STATES, AgentInfo, Task, TaskState
from aether.taskclient import CLIENT_TOKEN_ENV, HUB_URL_ENV, TaskClient

if TYPE_CHECKING:
    from rich.console import RenderableType
    from rich.progress import Progress, TaskID
    from rich.progress import Task as RichTask

    _SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]

__all__ = (
    "EXIT_FAILED",
    "EXIT_HUB",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "add_agents_parser",
    "add_task_parser",
    "agent_json",
    "amain",
    "build_parser",
    "main",
    "task_json",
)

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_HUB: Final = 3
EXIT_INTERRUPTED: Final = 130

DEFAULT_TOKEN_ENV: Final = CLIENT_TOKEN_ENV

_STATE_NAMES: Final = {
    state.name.lower(): state for state in TaskState if state != TaskState.UNSPECIFIED
}
# The TLS options: (AgentConfig field, flag, help).
_TLS_OPTIONS: Final = (
    ("tls_ca_file", "--tls-ca-file", "CA bundle to verify the Hub"),
    ("tls_cert_file", "--tls-cert-file", "client certificate (mutual TLS)"),
    ("tls_key_file", "--tls-key-file", "client private key (mutual TLS)"),
    ("tls_server_name", "--tls-server-name", "server name to check in the Hub's certificate"),
)


class UsageError(Exception):
    """A command line that cannot be carried out (exit status 2)."""


# -- parsing ------------------------------------------------------------------------------


def _metadata_item(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def _state(text: str) -> TaskState:
    name = text.strip().lower().removeprefix("task_state_")
    try:
        return _STATE_NAMES[name]
    except KeyError:
        raise argparse.ArgumentTypeError(
            f"unknown state {text!r}; use one of: {', '.join(_STATE_NAMES)}"
        ) from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
    return value


def _common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("connection and output")
    group.add_argument(
        "--hub-url",
        dest="hub_url",
        metavar="URL",
        default=None,
        help=f"the Hub's address: HOST[:PORT], grpc:// or grpcs:// (TLS); several,"
        f" comma-separated, to fail over between them (default: ${HUB_URL_ENV} or"
        f" {DEFAULT_HUB_URL})",
    )
    # The flag's first name, still accepted.
    group.add_argument("--hub", dest="hub_url", default=None, help=argparse.SUPPRESS)
    group.add_argument(
        "--token-env",
        metavar="VAR",
        default=None,
        help=f"environment variable holding a client token (default: {DEFAULT_TOKEN_ENV},"
        " sent only when set)",
    )
    for field, flag, text in _TLS_OPTIONS:
        group.add_argument(
            flag,
            dest=field,
            metavar="NAME" if field == "tls_server_name" else "FILE",
            default=None,
            help=f"{text} (default: ${AgentConfig.ENV_VARS[field]})",
        )
    group.add_argument("--json", action="store_true", help="print JSON for scripts")
    group.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=_seconds,
        default=10.0,
        help="time limit of each call to the Hub (default: 10)",
    )
    return common


def add_task_parser(subparsers: _SubParsers) -> None:
    """Add ``task`` and its commands to the ``aether`` command line."""
    common = _common_options()
    task = subparsers.add_parser(
        "task",
        help="submit, follow, list and cancel tasks",
        description="Submit, follow, list and cancel tasks on an Aether Hub.",
        epilog="exit status: 0 ok; 1 task failed/cancelled/not found; 2 usage error;"
        " 3 Hub unreachable or refused the call",
    )
    commands = task.add_subparsers(dest="task_command", metavar="COMMAND")
    commands.required = True

    submit = commands.add_parser(
        "submit", parents=[common], help="queue a task", description="Queue a task."
    )
    submit.add_argument("description", help="what the task asks for, in words")
    submit.add_argument(
        "--payload",
        metavar="@FILE|-|TEXT",
        help="the task's input: @FILE reads a file, - reads stdin, anything else is the text",
    )
    submit.add_argument(
        "--type", dest="task_type", metavar="TYPE", default="", help="task type (routes it)"
    )
    submit.add_argument("--agent", metavar="ID", default="", help="send to this agent only")
    submit.add_argument("--priority", metavar="N", type=int, default=0, help="higher runs first")
    submit.add_argument(
        "--metadata",
        metavar="KEY=VALUE",
        type=_metadata_item,
        nargs="+",
        action="extend",
        default=[],
        help="metadata passed to the agent (repeatable)",
    )
    submit.add_argument(
        "--workflow", metavar="ID", default="", help="the workflow the task belongs to"
    )
    submit.add_argument(
        "--max-attempts",
        metavar="N",
        type=_positive_int,
        default=0,
        help="deliveries before the task fails (default: the Hub's)",
    )
    submit.add_argument(
        "--deadline",
        type=_positive_int,
        default=0,
        metavar="SECONDS",
        help="the task times out this long after submission",
    )
    submit.add_argument(
        "--idempotency-key", metavar="KEY", default="", help="submit at most once per key"
    )
    submit.add_argument("--wait", action="store_true", help="follow the task until it ends")
    submit.set_defaults(handler=_handler(_submit))

    get = commands.add_parser("get", parents=[common], help="show one task")
    get.add_argument("task_id", metavar="ID")
    get.set_defaults(handler=_handler(_get))

    listing = commands.add_parser("list", parents=[common], help="list tasks, newest first")
    listing.add_argument(
        "--state",
        metavar="STATE",
        type=_state,
        default=None,
        help=f"only tasks in this state ({', '.join(_STATE_NAMES)})",
    )
    listing.add_argument(
        "--agent", metavar="ID", default="", help="assigned or addressed to this agent"
    )
    listing.add_argument(
        "--type", dest="task_type", metavar="TYPE", default="", help="of this type"
    )
    listing.add_argument(
        "--limit", metavar="N", type=_positive_int, default=20, help="at most N (default: 20)"
    )
    listing.add_argument(
        "--payloads",
        action="store_true",
        help="with --json, include each task's payload and result (left out by default)",
    )
    listing.set_defaults(handler=_handler(_list))

    cancel = commands.add_parser("cancel", parents=[common], help="cancel a task")
    cancel.add_argument("task_id", metavar="ID")
    cancel.add_argument(
        "--reason", metavar="TEXT", default="cancelled from the command line", help="why"
    )
    cancel.set_defaults(handler=_handler(_cancel))

    watch = commands.add_parser("watch", parents=[common], help="follow a task until it ends")
    watch.add_argument("task_id", metavar="ID")
    watch.set_defaults(handler=_handler(_watch))


# -- running ------------------------------------------------------------------------------

_Command = Callable[["_Context", argparse.Namespace], Coroutine[None, None, int]]


@dataclass
class _Context:
    client: TaskClient
    json: bool
    out: TextIO
    err: TextIO


def _handler(
    command: _Command,
) -> Callable[[argparse.Namespace], Coroutine[None, None, int]]:
    async def handle(args: argparse.Namespace) -> int:
        return await _run(command, args)

    return handle


def _token(args: argparse.Namespace, environ: Mapping[str, str]) -> str | None:
    name: str | None = args.token_env
    if name is None:
        return environ.get(DEFAULT_TOKEN_ENV) or None
    token = environ.get(name, "")
    if not token:
        raise UsageError(f"--token-env {name}: the variable is unset or empty")
    return token


def _client(args: argparse.Namespace, environ: Mapping[str, str]) -> TaskClient:
    """The TaskClient the flags (and, where a flag is absent, the environment) describe."""
    url: str = args.hub_url or environ.get(HUB_URL_ENV) or DEFAULT_HUB_URL
    source = "--hub-url" if args.hub_url else f"${HUB_URL_ENV}"
    try:
        parse_hub_urls(url)
    except AetherConfigError as exc:
        raise UsageError(f"{source}: {exc}") from None
    tls: dict[str, str | None] = {}
    for field, _flag, _help in _TLS_OPTIONS:
        value: str | None = getattr(args, field)
        tls[field] = value or environ.get(AgentConfig.ENV_VARS[field]) or None
    return TaskClient(
        url,
        token=_token(args, environ),
        tls_ca_file=tls["tls_ca_file"],
        tls_cert_file=tls["tls_cert_file"],
        tls_key_file=tls["tls_key_file"],
        tls_server_name=tls["tls_server_name"],
        timeout=float(args.timeout),
    )


async def _run(command: _Command, args: argparse.Namespace) -> int:
    out, err = sys.stdout, sys.stderr
    name: str = getattr(args, "cli_name", "aether task")  # what messages start with
    addresses: tuple[HubAddress, ...] = ()
    try:
        client = _client(args, os.environ)
        addresses = client.addresses
        async with client:
            return await command(_Context(client, bool(args.json), out, err), args)
    except (UsageError, AetherConfigError) as exc:
        print(f"{name}: {exc}", file=err)
        return EXIT_USAGE
    except ValueError as exc:  # an argument TaskClient refuses before sending (int32 range)
        print(f"{name}: {exc}", file=err)
        return EXIT_USAGE
    except TaskNotFoundError as exc:
        print(f"{name}: unknown task {exc.task_id!r}", file=err)
        return EXIT_FAILED
    except AuthenticationError as exc:
        print(
            f"{name}: the Hub wants a client token: {exc.detail}"
            f" (put it in ${DEFAULT_TOKEN_ENV} or name the variable with --token-env)",
            file=err,
        )
        return EXIT_HUB
    except AetherConnectionError as exc:
        print(_connection_message(addresses, exc, name), file=err)
        return EXIT_HUB
    except HubError as exc:
        return _hub_error(exc, err, name)
    except AetherError as exc:
        print(f"{name}: {exc}", file=err)
        return EXIT_HUB
    except BrokenPipeError:
        # Whoever reads our output went away (`aether task list | head -1`): the Hub is fine,
        # so say nothing about it; keep the interpreter's final flush from failing too.
        _discard_output(out)
        return EXIT_FAILED
    except asyncio.CancelledError:
        # Ctrl-C: asyncio.run cancels us; leave quietly (the task keeps running).
        print("\ninterrupted", file=err)
        return EXIT_INTERRUPTED


def _discard_output(out: TextIO) -> None:
    """Point a closed pipe's file descriptor at /dev/null (as the Python docs advise)."""
    try:
        fd = out.fileno()
    except (OSError, ValueError):  # not backed by a file descriptor (e.g. captured in tests)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def _connection_message(
    addresses: tuple[HubAddress, ...], exc: AetherConnectionError, name: str
) -> str:
    where = " or ".join(address.authority for address in addresses) or "?"
    if exc.reason == "refused":
        return f"cannot reach the Aether Hub at {where} — is `aether hub` running?"
    if exc.reason == "unreachable":
        return f"cannot reach the Aether Hub at {where} — is `aether hub` running? ({exc.detail})"
    if exc.reason == "timeout":
        return f"{name}: the Aether Hub at {where} did not answer in time"
    # TLS trouble, a lost connection, UNAVAILABLE: the SDK's message says what to check.
    return f"{name}: {exc}"


def _hub_error(exc: HubError, err: TextIO, name: str) -> int:
    detail = exc.detail or str(exc)
    if exc.status is Status.INVALID_ARGUMENT:
        print(f"{name}: the Hub refused the request: {detail}", file=err)
        return EXIT_USAGE
    if exc.status is Status.DEADLINE_EXCEEDED:
        print(f"{name}: the Hub did not answer in time", file=err)
        return EXIT_HUB
    if exc.status is None:
        print(f"{name}: {exc}", file=err)
        return EXIT_HUB
    print(f"{name}: the Hub answered {exc.status.name}: {detail}", file=err)
    return EXIT_HUB


def _read_payload(spec: str | None) -> bytes:
    if spec is None:
        return b""
    if spec == "-":
        return (
            sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read().encode()
        )
    if spec.startswith("@"):
        path = spec[1:]
        try:
            with open(path, "rb") as handle:
                return handle.read()
        except OSError as exc:
            raise UsageError(f"--payload {spec}: {exc.strerror or exc}") from None
    return spec.encode("utf-8")


# -- commands -----------------------------------------------------------------------------


async def _submit(ctx: _Context, args: argparse.Namespace) -> int:
    submitted = await ctx.client.submit(
        args.description,
        payload=_read_payload(args.payload),
        task_type=args.task_type,
        target_agent_id=args.agent,
        priority=args.priority,
        metadata=dict(args.metadata),
        workflow_id=args.workflow,
        max_attempts=args.max_attempts,
        timeout_seconds=args.deadline,
        idempotency_key=args.idempotency_key,
    )
    if not args.wait:
        if ctx.json:
            _print_json(ctx.out, {"task_id": submitted.task_id})
        else:
            print(submitted.task_id, file=ctx.out)
        return EXIT_OK
    if not ctx.json:
        print(f"submitted task {submitted.task_id}", file=ctx.err)
    warning = await _nobody_serves(ctx.client, task_type=args.task_type, agent_id=args.agent)
    if warning:
        print(f"aether task: warning: {warning}", file=ctx.err)
    return await _follow(ctx, submitted.task_id, final_only=True)


async def _nobody_serves(client: TaskClient, *, task_type: str, agent_id: str) -> str | None:
    """Why no connected agent would be sent this task now (None when one would).

    A Hub without `ListAgents` (an older or foreign one) gets no warning.
    """
    try:
        if agent_id:
            agents = await client.list_agents(agent_id=agent_id)
            missing = f"agent {agent_id!r} is not connected"
        else:
            agents = await client.list_agents(task_type=task_type)
            missing = (
                f"no connected agent serves task type {task_type!r}"
                if task_type
                else "no agent is connected"
            )
    except HubError as exc:
        if exc.status is Status.UNIMPLEMENTED:
            return None
        raise
    if agents:
        return None
    return f"{missing} to the Hub at {client.address.authority}; the task waits until one is"


async def _get(ctx: _Context, args: argparse.Namespace) -> int:
    task = await ctx.client.get(args.task_id)
    if ctx.json:
        _print_json(ctx.out, task_json(task))
    else:
        _print_task(ctx.out, task)
    return EXIT_OK


async def _list(ctx: _Context, args: argparse.Namespace) -> int:
    wanted: int = args.limit
    # One more than asked for tells whether there are more.
    tasks = [
        task
        async for task in ctx.client.list(
            state=args.state,
            agent_id=args.agent,
            task_type=args.task_type,
            page_size=min(wanted + 1, 1000),
            limit=wanted + 1,
            include_payloads=bool(args.payloads),
        )
    ]
    more, tasks = len(tasks) > wanted, tasks[:wanted]
    if ctx.json:
        _print_json(ctx.out, [task_json(t, payloads=bool(args.payloads)) for t in tasks])
        return EXIT_OK
    if not tasks:
        print("no tasks", file=ctx.err)
        return EXIT_OK
    rows = [
        [
            t.task_id,
            _state_name(t.state),
            t.task_type or "-",
            t.assigned_agent_id or t.target_agent_id or "-",
            str(t.priority),
            str(t.attempt),
            f"{round(t.progress * 100)}%",
            _short_time(t.updated_at or t.created_at),
            _clip(t.description, 40),
        ]
        for t in tasks
    ]
    headers = ["TASK ID", "STATE", "TYPE", "AGENT", "PRIO", "TRY", "DONE", "UPDATED", "DESCRIPTION"]
    if _isatty(ctx.out):
        _print_rich_table(ctx.out, headers, rows)
    else:
        _print_table(ctx.out, headers, rows)
    if more:
        print(f"(more tasks: raise --limit above {wanted})", file=ctx.err)
    return EXIT_OK


async def _cancel(ctx: _Context, args: argparse.Namespace) -> int:
    reply = await ctx.client.cancel(args.task_id, reason=args.reason)
    if ctx.json:
        _print_json(
            ctx.out,
            {
                "task_id": args.task_id,
                "success": reply.success,
                "state": _state_name(reply.state),
                "message": reply.message,
            },
        )
    elif reply.success:
        print(f"cancelled task {args.task_id}", file=ctx.out)
    else:
        detail = f": {reply.message}" if reply.message else ""
        print(
            f"aether task: task {args.task_id} was not cancelled"
            f" (it is {_state_name(reply.state)}){detail}",
            file=ctx.err,
        )
    return EXIT_OK if reply.success else EXIT_FAILED


async def _watch(ctx: _Context, args: argparse.Namespace) -> int:
    return await _follow(ctx, args.task_id, final_only=False)


async def _follow(ctx: _Context, task_id: str, *, final_only: bool) -> int:
    """Follow a task until it is final; print the outcome."""
    # Made at the first update: an unknown task is one error line, with no display before.
    progress: _Display | None = None
    last: Task | None = None
    try:
        async for task in ctx.client.watch(task_id):
            last = task
            if ctx.json and not final_only:
                _print_json(ctx.out, task_json(task), compact=True)
            if progress is None:
                progress = _display(ctx, task_id)
            progress.show(task)
    finally:
        if progress is not None:
            progress.close()
    # watch() ends only at a final state (it raises otherwise).
    assert last is not None and last.state in TERMINAL_TASK_STATES
    if ctx.json:
        if final_only:
            _print_json(ctx.out, task_json(last))
    else:
        _print_outcome(ctx, last)
    return EXIT_OK if last.state == TaskState.SUCCEEDED else EXIT_FAILED


# -- output -------------------------------------------------------------------------------


class _Display:
    """How a followed task's changes are shown."""

    def show(self, task: Task) -> None:
        """Show the task as it is now."""

    def close(self) -> None:
        """The follow is over (normally or not)."""


class _NoProgress(_Display):
    """--json: the output is the JSON alone."""


class _LineProgress(_Display):
    """Not a terminal: one plain line per change (of state, progress or message)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._last_line = ""

    def show(self, task: Task) -> None:
        percent = max(0, min(100, round(task.progress * 100)))
        message = task.status_message
        line = f"{_state_name(task.state)} {percent}%" + (f" {message}" if message else "")
        if line != self._last_line:
            self._stream.write(f"task {task.task_id}: {line}\n")
            self._stream.flush()
            self._last_line = line


# How each state looks in the live display and the table (rich styles).
_STATE_STYLES: Final = {
    "pending": "dim",
    "leased": "cyan",
    "running": "cyan",
    "succeeded": "green",
    "failed": "bold red",
    "cancelled": "yellow",
    "timed_out": "red",
}
_FINAL_MARKS: Final = {"succeeded": "✓", "failed": "✗", "cancelled": "-", "timed_out": "✗"}


class _LiveProgress(_Display):
    """A terminal: a live rich progress bar with state, percentage, time and status line.

    Refreshed by a task of the event loop rather than rich's own thread, so that every
    write to the stream happens on the loop's thread.
    """

    REFRESH_SECONDS: Final = 0.1

    def __init__(self, stream: TextIO, task_id: str) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            Progress,
            SpinnerColumn,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
        )
        from rich.text import Text

        class MarkOrSpinner(SpinnerColumn):
            """A spinner while the task goes on, its outcome's mark once it is final."""

            def render(self, task: RichTask) -> RenderableType:
                mark = task.fields.get("mark")
                return Text(mark) if isinstance(mark, str) and mark else super().render(task)

        console = Console(file=stream, force_terminal=True, highlight=False)
        self._progress: Progress = Progress(
            MarkOrSpinner(),
            TextColumn("{task.fields[state]}"),
            BarColumn(bar_width=24),
            TaskProgressColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[message]}"),
            console=console,
            auto_refresh=False,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._id: TaskID = self._progress.add_task(
            task_id, total=100, state=f"[dim]{'waiting':<9}[/]", message="", mark=""
        )
        self._progress.start()
        self._ticker = asyncio.get_running_loop().create_task(self._tick())

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.REFRESH_SECONDS)
            self._progress.refresh()

    def show(self, task: Task) -> None:
        from rich.markup import escape

        state = _state_name(task.state)
        style = _STATE_STYLES.get(state, "")
        message = task.error_message if task.state in TERMINAL_TASK_STATES else ""
        message = message or task.status_message
        final = task.state in TERMINAL_TASK_STATES
        self._progress.update(
            self._id,
            completed=max(0.0, min(100.0, task.progress * 100)),
            state=f"[{style}]{state:<9}[/]" if style else f"{state:<9}",
            message=escape(_clip(message, 60)),
            mark=_FINAL_MARKS.get(state, "") if final else "",
        )
        if final:
            self._progress.stop_task(self._id)  # stops the elapsed-time clock
        self._progress.refresh()

    def close(self) -> None:
        self._ticker.cancel()
        self._progress.stop()


def _display(ctx: _Context, task_id: str) -> _Display:
    if ctx.json:
        return _NoProgress()
    if _isatty(ctx.err):
        return _LiveProgress(ctx.err, task_id)
    return _LineProgress(ctx.err)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _print_outcome(ctx: _Context, task: Task) -> None:
    state = _state_name(task.state)
    if task.state == TaskState.SUCCEEDED:
        text = _bytes_text(task.result)
        if text is None:
            print(
                f"task {task.task_id} succeeded with {len(task.result)} bytes of binary result"
                " (use --json to get it as base64)",
                file=ctx.err,
            )
        else:
            ctx.out.write(text if text.endswith("\n") or not text else text + "\n")
            ctx.out.flush()
        return
    detail = f": {task.error_message}" if task.error_message else ""
    print(f"task {task.task_id} {state}{detail}", file=ctx.err)


def _state_name(state: TaskState | int) -> str:
    try:
        return TaskState(state).name.lower()
    except ValueError:
        return str(state)


def _bytes_text(data: bytes) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _bytes_field(name: str, data: bytes) -> dict[str, object]:
    text = _bytes_text(data)
    if text is None:
        return {f"{name}_base64": base64.b64encode(data).decode("ascii")}
    return {name: text}


def _iso(moment: datetime.datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _short_time(moment: datetime.datetime | None) -> str:
    if moment is None:
        return "-"
    return moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def task_json(task: Task, *, payloads: bool = True) -> dict[str, object]:
    """A task as a JSON-ready dict (bytes as UTF-8 text, else as `<name>_base64`).

    Without `payloads` the payload and result keys are left out (a listing did not fetch
    them: empty values would read as "empty")."""
    return {
        "task_id": task.task_id,
        "state": _state_name(task.state),
        "description": task.description,
        "task_type": task.task_type,
        "target_agent_id": task.target_agent_id,
        "assigned_agent_id": task.assigned_agent_id,
        "priority": task.priority,
        "attempt": task.attempt,
        "max_attempts": task.max_attempts,
        "progress": round(task.progress, 4),
        "status_message": task.status_message,
        "workflow_id": task.workflow_id,
        "metadata": dict(task.metadata),
        **(_bytes_field("payload", task.payload) if payloads else {}),
        **(_bytes_field("result", task.result) if payloads else {}),
        "error_message": task.error_message,
        "metrics": dict(task.metrics),
        "created_at": _iso(task.created_at),
        "updated_at": _iso(task.updated_at),
        "completed_at": _iso(task.completed_at),
        "deadline": _iso(task.deadline),
    }


def _print_json(stream: TextIO, value: object, *, compact: bool = False) -> None:
    if compact:
        stream.write(json.dumps(value, ensure_ascii=False, separators=(",", ":")) + "\n")
    else:
        stream.write(json.dumps(value, ensure_ascii=False, indent=2) + "\n")
    stream.flush()


def _print_table(stream: TextIO, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    for line in [headers, *rows]:
        cells = (cell.ljust(w) for cell, w in zip(line, widths, strict=True))
        stream.write("  ".join(cells).rstrip() + "\n")
    stream.flush()


# Columns a narrow terminal goes without, first to last; the id and state always show.
_NARROW_DROPS: Final = ("TRY", "PRIO", "UPDATED", "TYPE", "DONE", "AGENT")
# Space between two columns of the rich table (SIMPLE_HEAD: padding, rule, padding).
_COLUMN_GAP: Final = 3


def _print_rich_table(
    stream: TextIO, headers: Sequence[str], rows: Sequence[Sequence[str]]
) -> None:
    """The table of `_print_table`, drawn by rich for a terminal: states in colour, one line
    per task, columns dropped (and the description cut short) to fit the terminal."""
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console(file=stream, force_terminal=True, highlight=False)
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]
    keep = list(range(len(headers)))
    description = list(headers).index("DESCRIPTION")

    def others() -> int:
        return sum(widths[i] + _COLUMN_GAP for i in keep if i != description)

    for name in _NARROW_DROPS:
        if others() + min(widths[description], 20) <= console.width:
            break
        keep.remove(list(headers).index(name))
    table = Table(box=box.SIMPLE_HEAD, header_style="bold", show_edge=False, pad_edge=False)
    for i in keep:
        table.add_column(
            headers[i],
            no_wrap=True,
            overflow="ellipsis",
            justify="right" if headers[i] in ("PRIO", "TRY", "DONE") else "left",
            max_width=max(len(headers[i]), console.width - others()) if i == description else None,
        )
    state = list(headers).index("STATE")
    for row in rows:
        cells = [
            Text(row[i], style=_STATE_STYLES.get(row[i], "") if i == state else "") for i in keep
        ]
        table.add_row(*cells)
    console.print(table)
    stream.flush()


def _print_task(stream: TextIO, task: Task) -> None:
    fields: list[tuple[str, str]] = [
        ("task", task.task_id),
        ("state", _state_name(task.state)),
        ("description", task.description),
        ("type", task.task_type or "-"),
        ("agent", task.assigned_agent_id or task.target_agent_id or "-"),
        ("priority", str(task.priority)),
        ("attempt", f"{task.attempt} of {task.max_attempts}" if task.max_attempts else "-"),
        ("progress", f"{round(task.progress * 100)}% {task.status_message}".rstrip()),
        ("created", _short_time(task.created_at)),
        ("updated", _short_time(task.updated_at)),
        ("completed", _short_time(task.completed_at)),
    ]
    if task.workflow_id:
        fields.append(("workflow", task.workflow_id))
    if task.deadline is not None:
        fields.append(("deadline", _short_time(task.deadline)))
    if task.metadata:
        fields.append(("metadata", ", ".join(f"{k}={v}" for k, v in sorted(task.metadata.items()))))
    if task.payload:
        fields.append(("payload", _describe_bytes(task.payload)))
    if task.result:
        fields.append(("result", _describe_bytes(task.result)))
    if task.error_message:
        fields.append(("error", task.error_message))
    if task.metrics:
        fields.append(("metrics", ", ".join(f"{k}={v}" for k, v in sorted(task.metrics.items()))))
    width = max(len(name) for name, _ in fields) + 1
    for name, value in fields:
        stream.write(f"{name + ':':<{width}} {value}\n")
    stream.flush()


def _describe_bytes(data: bytes) -> str:
    text = _bytes_text(data)
    if text is None:
        return f"<{len(data)} bytes of binary data>"
    return _clip(text, 200)


# -- entry points -------------------------------------------------------------------------


def add_agents_parser(subparsers: _SubParsers) -> None:
    """Add ``agents`` (``aether agents list``) to the ``aether`` command line."""
    agents = subparsers.add_parser(
        "agents",
        help="show the agents connected to a Hub",
        description="Show the agents connected to a running Aether Hub (its ListAgents call).",
    )
    commands = agents.add_subparsers(dest="agents_command", metavar="COMMAND")
    commands.required = True
    listing = commands.add_parser(
        "list",
        parents=[_common_options()],
        help="connected agents, what they serve and their last heartbeat",
        description="The agents connected to the Hub now, ordered by id.",
    )
    listing.add_argument(
        "--type", dest="task_type", metavar="TYPE", default="", help="only agents serving TYPE"
    )
    listing.set_defaults(handler=_handler(_list_agents), cli_name="aether agents")


async def _list_agents(ctx: _Context, args: argparse.Namespace) -> int:
    agents = await ctx.client.list_agents(task_type=args.task_type)
    if ctx.json:
        _print_json(ctx.out, [agent_json(agent) for agent in agents])
        return EXIT_OK
    if not agents:
        print(f"no agents connected to the Hub at {ctx.client.address.authority}", file=ctx.err)
        return EXIT_OK
    headers = ["AGENT ID", "NAME", "STATE", "TASK TYPES", "RUNNING", "LAST HEARTBEAT"]
    rows = [
        [
            a.agent_id,
            a.agent_name or "-",
            a.state.name.lower(),
            ",".join(a.task_types) or "-",
            f"{a.running_tasks}/{a.max_concurrent_tasks}",
            _short_time(a.last_heartbeat),
        ]
        for a in agents
    ]
    if _isatty(ctx.out):
        from rich import box
        from rich.console import Console
        from rich.table import Table

        table = Table(box=box.SIMPLE_HEAD, header_style="bold", show_edge=False, pad_edge=False)
        for header in headers:
            table.add_column(header, no_wrap=True, overflow="ellipsis")
        for row in rows:
            table.add_row(*row)
        Console(file=ctx.out, force_terminal=True, highlight=False).print(table)
    else:
        _print_table(ctx.out, headers, rows)
    return EXIT_OK


def agent_json(agent: AgentInfo) -> dict[str, object]:
    """A connected agent as a JSON-ready dict (times in ISO 8601)."""
    return {
        "agent_id": agent.agent_id,
        "agent_name": agent.agent_name,
        "version": agent.version,
        "state": agent.state.name.lower(),
        "task_types": list(agent.task_types),
        "running_tasks": agent.running_tasks,
        "max_concurrent_tasks": agent.max_concurrent_tasks,
        "trust_level": agent.trust_level.name.lower(),
        "capabilities": dict(agent.capabilities),
        "connected_at": _iso(agent.connected_at),
        "last_heartbeat": _iso(agent.last_heartbeat),
    }


def build_parser() -> argparse.ArgumentParser:
    """A parser for ``aether task ...`` alone (what `main` uses)."""
    parser = argparse.ArgumentParser(prog="aether")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    add_task_parser(subparsers)
    return parser


async def amain(argv: Sequence[str]) -> int:
    """Run ``aether task <argv>`` in the running event loop; the exit status."""
    try:
        args = build_parser().parse_args(["task", *argv])
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    handler: Callable[[argparse.Namespace], Coroutine[None, None, int]] = args.handler
    return await handler(args)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``aether task <argv>``; the exit status."""
    return asyncio.run(amain(sys.argv[1:] if argv is None else argv))
