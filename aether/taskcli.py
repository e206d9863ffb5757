"""`aether task`: submit, follow, list and cancel tasks on an Aether Hub.

```
aether task submit DESCRIPTION [--payload @FILE|-|TEXT] [--type T] [--agent ID]
                   [--priority N] [--metadata K=V ...] [--workflow W] [--wait]
aether task get ID
aether task list [--state S] [--agent A] [--type T] [--limit N]
aether task cancel ID [--reason TEXT]
aether task watch ID
```

Every command takes ``--hub HOST:PORT`` (default ``$AETHER_HUB_URL`` or
``localhost:50051``; ``https://`` or ``grpcs://`` for TLS), ``--token-env VAR`` (the
environment variable holding a client token, default ``AETHER_CLIENT_TOKEN``, sent only
when set), ``--json`` (machine-readable output) and ``--timeout SECONDS`` (per call).

``submit`` prints the new task's id; with ``--wait`` it follows the task (a progress bar
on stderr when stderr is a terminal, plain status lines otherwise) and then prints the
result. ``watch`` follows a task the same way; with ``--json`` it prints one JSON object
per change (NDJSON).

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

import grpclib.client
from grpclib.const import Status
from grpclib.exceptions import GRPCError, StreamTerminatedError

from aether._wire import client, pb

if TYPE_CHECKING:
    _SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]

__all__ = (
    "EXIT_FAILED",
    "EXIT_HUB",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "HubAddress",
    "add_task_parser",
    "amain",
    "main",
    "parse_hub_url",
)

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_HUB: Final = 3
EXIT_INTERRUPTED: Final = 130

DEFAULT_HUB_URL: Final = "localhost:50051"
DEFAULT_TOKEN_ENV: Final = "AETHER_CLIENT_TOKEN"

_TERMINAL: Final = frozenset(
    {
        pb.TaskState.SUCCEEDED,
        pb.TaskState.FAILED,
        pb.TaskState.CANCELLED,
        pb.TaskState.TIMED_OUT,
    }
)
_STATE_NAMES: Final = {
    state.name.lower(): state for state in pb.TaskState if state != pb.TaskState.UNSPECIFIED
}


class UsageError(Exception):
    """A command line that cannot be carried out (exit status 2)."""


class HubError(Exception):
    """The Hub could not be reached or refused the call (exit status 3)."""


# -- parsing ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HubAddress:
    """Where the Hub listens."""

    host: str
    port: int
    tls: bool = False

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_hub_url(url: str) -> HubAddress:
    """``HOST:PORT``, ``HOST`` (port 50051), ``[::1]:PORT``, optionally with a scheme."""
    text = url.strip()
    tls = False
    for scheme, secure in (("grpcs://", True), ("https://", True), ("grpc://", False)):
        if text.lower().startswith(scheme):
            text, tls = text[len(scheme) :], secure
            break
    else:
        if text.lower().startswith("http://"):
            text = text[len("http://") :]
    text = text.rstrip("/")
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest.removeprefix(":")
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:
        host, port_text = text, ""
    if not host:
        raise UsageError(f"--hub {url!r}: no host")
    if not port_text:
        return HubAddress(host, 50051, tls)
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise UsageError(f"--hub {url!r}: the port must be a number from 1 to 65535")
    return HubAddress(host, int(port_text), tls)


def _metadata_item(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def _state(text: str) -> pb.TaskState:
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
        "--hub",
        metavar="URL",
        default=None,
        help=f"the Hub's address (default: $AETHER_HUB_URL or {DEFAULT_HUB_URL})",
    )
    group.add_argument(
        "--token-env",
        metavar="VAR",
        default=None,
        help=f"environment variable holding a client token (default: {DEFAULT_TOKEN_ENV},"
        " sent only when set)",
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
        default=pb.TaskState.UNSPECIFIED,
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
    address: HubAddress
    stub: client.TaskServiceStub
    json: bool
    timeout: float
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


async def _run(command: _Command, args: argparse.Namespace) -> int:
    out, err = sys.stdout, sys.stderr
    channel: grpclib.client.Channel | None = None
    address: HubAddress | None = None
    try:
        address = parse_hub_url(args.hub or os.environ.get("AETHER_HUB_URL") or DEFAULT_HUB_URL)
        token = _token(args, os.environ)
        channel = grpclib.client.Channel(address.host, address.port, ssl=address.tls or None)
        metadata = {"authorization": f"Bearer {token}"} if token else None
        stub = client.TaskServiceStub(channel, metadata=metadata)
        context = _Context(address, stub, bool(args.json), float(args.timeout), out, err)
        return await command(context, args)
    except UsageError as exc:
        print(f"aether task: {exc}", file=err)
        return EXIT_USAGE
    except HubError as exc:
        print(f"aether task: {exc}", file=err)
        return EXIT_HUB
    except GRPCError as exc:
        return _grpc_error(exc, err)
    except BrokenPipeError:
        # Whoever reads our output went away (`aether task list | head -1`): the Hub is fine,
        # so say nothing about it; keep the interpreter's final flush from failing too.
        _discard_output(out)
        return EXIT_FAILED
    except (OSError, StreamTerminatedError, asyncio.TimeoutError) as exc:
        print(_connection_message(address, exc), file=err)
        return EXIT_HUB
    except asyncio.CancelledError:
        # Ctrl-C: asyncio.run cancels us; leave quietly (the task keeps running).
        print("\ninterrupted", file=err)
        return EXIT_INTERRUPTED
    finally:
        if channel is not None:
            channel.close()


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


def _connection_message(address: HubAddress | None, exc: BaseException) -> str:
    where = str(address) if address is not None else "?"
    if isinstance(exc, asyncio.TimeoutError):
        return f"aether task: the Aether Hub at {where} did not answer in time"
    if isinstance(exc, StreamTerminatedError):
        return f"aether task: lost the connection to the Aether Hub at {where}"
    if isinstance(exc, ConnectionRefusedError):
        return f"cannot reach the Aether Hub at {where} — is `aether hub` running?"
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return f"cannot reach the Aether Hub at {where} — is `aether hub` running? ({reason})"


def _grpc_error(exc: GRPCError, err: TextIO) -> int:
    message = exc.message or exc.status.name
    if exc.status is Status.NOT_FOUND:
        print(f"aether task: {message}", file=err)
        return EXIT_FAILED
    if exc.status is Status.INVALID_ARGUMENT:
        print(f"aether task: the Hub refused the request: {message}", file=err)
        return EXIT_USAGE
    if exc.status is Status.UNAUTHENTICATED:
        print(
            f"aether task: the Hub wants a client token: {message}"
            f" (put it in ${DEFAULT_TOKEN_ENV} or name the variable with --token-env)",
            file=err,
        )
        return EXIT_HUB
    if exc.status is Status.DEADLINE_EXCEEDED:
        print("aether task: the Hub did not answer in time", file=err)
        return EXIT_HUB
    print(f"aether task: the Hub answered {exc.status.name}: {message}", file=err)
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
    request = pb.SubmitTaskRequest(
        description=args.description,
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
    reply = await ctx.stub.submit_task(request, timeout=ctx.timeout)
    if not args.wait:
        if ctx.json:
            _print_json(ctx.out, {"task_id": reply.task_id})
        else:
            print(reply.task_id, file=ctx.out)
        return EXIT_OK
    if not ctx.json:
        print(f"submitted task {reply.task_id}", file=ctx.err)
    return await _follow(ctx, reply.task_id, final_only=True)


async def _get(ctx: _Context, args: argparse.Namespace) -> int:
    task = await ctx.stub.get_task(pb.GetTaskRequest(task_id=args.task_id), timeout=ctx.timeout)
    if ctx.json:
        _print_json(ctx.out, task_json(task))
    else:
        _print_task(ctx.out, task)
    return EXIT_OK


async def _list(ctx: _Context, args: argparse.Namespace) -> int:
    reply = await ctx.stub.list_tasks(
        pb.ListTasksRequest(
            state=args.state, agent_id=args.agent, task_type=args.task_type, limit=args.limit
        ),
        timeout=ctx.timeout,
    )
    if ctx.json:
        _print_json(ctx.out, [task_json(t) for t in reply.tasks])
        return EXIT_OK
    if not reply.tasks:
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
        for t in reply.tasks
    ]
    headers = ["TASK ID", "STATE", "TYPE", "AGENT", "PRIO", "TRY", "DONE", "UPDATED", "DESCRIPTION"]
    _print_table(ctx.out, headers, rows)
    if reply.next_page_token:
        print(f"(more tasks: raise --limit above {args.limit})", file=ctx.err)
    return EXIT_OK


async def _cancel(ctx: _Context, args: argparse.Namespace) -> int:
    reply = await ctx.stub.cancel_task(
        pb.CancelTaskRequest(task_id=args.task_id, reason=args.reason), timeout=ctx.timeout
    )
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
    """Follow a task with WatchTask until it is terminal; print the outcome."""
    progress = _Progress(ctx.err, enabled=not ctx.json)
    last: pb.Task | None = None
    try:
        async for update in ctx.stub.watch_task(pb.WatchTaskRequest(task_id=task_id)):
            if update.task is None:
                continue
            last = update.task
            if ctx.json and not final_only:
                _print_json(ctx.out, task_json(last), compact=True)
            progress.show(last)
            if last.state in _TERMINAL:
                break
    finally:
        progress.close()
    if last is None or last.state not in _TERMINAL:
        raise HubError(f"the Hub ended the watch of task {task_id} before it finished")
    if ctx.json:
        if final_only:
            _print_json(ctx.out, task_json(last))
    else:
        _print_outcome(ctx, last)
    return EXIT_OK if last.state == pb.TaskState.SUCCEEDED else EXIT_FAILED


# -- output -------------------------------------------------------------------------------


class _Progress:
    """A progress bar on a terminal; plain lines (one per change) otherwise."""

    WIDTH: Final = 24

    def __init__(self, stream: TextIO, *, enabled: bool) -> None:
        self._stream = stream
        self._enabled = enabled
        self._tty = enabled and _isatty(stream)
        self._last_line = ""
        self._drawn = False

    def show(self, task: pb.Task) -> None:
        if not self._enabled:
            return
        percent = max(0, min(100, round(task.progress * 100)))
        state = _state_name(task.state)
        message = task.status_message
        if self._tty:
            filled = round(self.WIDTH * percent / 100)
            bar = "#" * filled + "-" * (self.WIDTH - filled)
            line = f"[{bar}] {percent:3d}%  {state:<9}  {_clip(message, 40)}"
            self._stream.write("\r\x1b[2K" + line)
            self._stream.flush()
            self._drawn = True
            return
        line = f"{state} {percent}%" + (f" {message}" if message else "")
        if line != self._last_line:
            self._stream.write(f"task {task.task_id}: {line}\n")
            self._stream.flush()
            self._last_line = line

    def close(self) -> None:
        if self._drawn:
            self._stream.write("\n")
            self._stream.flush()
            self._drawn = False


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _print_outcome(ctx: _Context, task: pb.Task) -> None:
    state = _state_name(task.state)
    if task.state == pb.TaskState.SUCCEEDED:
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


def _state_name(state: pb.TaskState | int) -> str:
    try:
        return pb.TaskState(state).name.lower()
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


def task_json(task: pb.Task) -> dict[str, object]:
    """A task as a JSON-ready dict (bytes as UTF-8 text, else as `<name>_base64`)."""
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
        **_bytes_field("payload", task.payload),
        **_bytes_field("result", task.result),
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


def _print_task(stream: TextIO, task: pb.Task) -> None:
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
