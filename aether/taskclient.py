"""`TaskClient`: submit, follow, list and cancel tasks on an Aether Hub from Python.

```python
from aether import TaskClient, TaskState

async with TaskClient(hub_url="localhost:50051", token=...) as client:  # or TaskClient.from_env()
    task = await client.submit("Analyze the logs", task_type="analysis", payload=b"...")
    done = await task.wait(timeout=30)  # the final Task
    assert done.state is TaskState.SUCCEEDED
    async for t in client.list(task_type="analysis", limit=50):
        print(t.task_id, t.state.name)
```

It talks to the Hub's `TaskService` over one HTTP/2 connection (opened on first use,
re-opened after a failure). Every failure is an `aether.errors` type: `AetherConnectionError`
when the Hub cannot be reached, `AuthenticationError` for a missing or wrong client token,
`TaskNotFoundError` for an unknown task id, `TaskWaitTimeoutError` when `wait` gives up,
`HubError` for anything else the Hub refuses. Messages never contain the token.
"""

from __future__ import annotations

import asyncio
import builtins
import os
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Final, TypeVar

from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from pydantic import SecretStr, ValidationError

from aether._connection import (
    ChannelFactory,
    TlsFiles,
    failover_error,
    open_hub_channel,
    ssl_context,
)
from aether._tracing import client_span
from aether._wire import client as wire_client
from aether._wire import pb
from aether.address import DEFAULT_HUB_URL, HubAddress, describe_hub_addresses, parse_hub_urls
from aether.config import DEFAULT_MAX_MESSAGE_BYTES, AgentConfig
from aether.errors import (
    AetherConfigError,
    AetherConnectionError,
    AetherError,
    AgentStateError,
    HubError,
    MessageTooLargeError,
    TaskWaitTimeoutError,
    map_exception,
    method_not_served,
)
from aether.logredact import install_log_redaction
from aether.models import (
    TERMINAL_TASK_STATES,
    AgentInfo,
    CancelTaskResponse,
    QueueStats,
    SubmitTaskRequest,
    Task,
    TaskState,
)

__all__ = (
    "CLIENT_TOKEN_ENV",
    "DEFAULT_CALL_TIMEOUT",
    "HUB_URL_ENV",
    "MAX_SUBMIT_BATCH",
    "SubmittedTask",
    "TaskClient",
)

#: The environment variable `from_env()` reads the client token from.
CLIENT_TOKEN_ENV: Final = "AETHER_CLIENT_TOKEN"
#: The environment variable of the Hub's address (the same one agents read).
HUB_URL_ENV: Final = AgentConfig.ENV_VARS["hub_url"]
#: Seconds each call to the Hub may take, unless the client is made with another `timeout`.
DEFAULT_CALL_TIMEOUT: Final = 10.0

# Calls that only read: safe to make again at another address after a failure on the way.
_READ_OPERATIONS: Final = frozenset(
    {"GetTask", "ListTasks", "WatchTask", "ListAgents", "GetQueueStats"}
)

# The Hub answers at most this many tasks per ListTasks page.
_MAX_PAGE_SIZE: Final = 1000
#: Tasks one `SubmitTasks` call may carry (the API's limit).
MAX_SUBMIT_BATCH: Final = 1000
# SubmitTask calls in flight at once when the Hub has no SubmitTasks.
_UNARY_IN_FLIGHT: Final = 64

_T = TypeVar("_T")


@dataclass(frozen=True)
class SubmittedTask:
    """A task this client submitted: its id, and the client's calls bound to it."""

    task_id: str
    client: TaskClient = field(repr=False, compare=False)

    def __str__(self) -> str:
        return self.task_id

    async def get(self) -> Task:
        """The task now (`TaskClient.get`)."""
        return await self.client.get(self.task_id)

    async def wait(self, *, timeout: float | None = None) -> Task:
        """Wait until the task is final and return it (`TaskClient.wait`)."""
        return await self.client.wait(self.task_id, timeout=timeout)

    def watch(self) -> AsyncIterator[Task]:
        """The task now and after every change, until final (`TaskClient.watch`)."""
        return self.client.watch(self.task_id)

    async def cancel(self, *, reason: str = "") -> CancelTaskResponse:
        """Cancel the task if it has not finished (`TaskClient.cancel`)."""
        return await self.client.cancel(self.task_id, reason=reason)


class TaskClient:
    """An async client of the Hub's `TaskService`. See the module docs for an example.

    `hub_url` takes the forms of `aether.address.parse_hub_url` (default: `$AETHER_HUB_URL`,
    else ``localhost:50051``), or several of them comma-separated (``h1:50051,h2:50051``):
    then a call that cannot connect moves on to the next address, and so does a call that
    failed on its way (connection lost, timeout, UNAVAILABLE) when repeating it is safe:
    reads (`get`, `list`, `watch`, `wait`, `list_agents`, `queue_stats`) and a `submit`
    with an `idempotency_key`. The client then stays on the address that answered.
    `token` is the Hub's client token, sent as ``authorization: Bearer <token>`` (a
    development Hub on loopback needs none). The
    `tls_*` settings are those of `AgentConfig`: any of them, or a ``grpcs://`` /
    ``https://`` address, means TLS. `timeout` bounds every call except `watch` and `wait`
    (which follow a task for as long as it takes, or their own `timeout`). Replies larger
    than `max_message_bytes` are refused, and so are submissions larger than it, before
    they are sent.

    `channel_factory` replaces how the connection is made (as for `AgentClient`);
    `aether_hub.testing` passes in-memory channels this way. Then `hub_url` only names the
    Hub in messages.

    Use it as ``async with TaskClient(...) as client:``, or call `close()` when done.
    """

    def __init__(
        self,
        hub_url: str | None = None,
        *,
        token: str | SecretStr | None = None,
        tls_ca_file: str | None = None,
        tls_cert_file: str | None = None,
        tls_key_file: str | None = None,
        tls_server_name: str | None = None,
        timeout: float = DEFAULT_CALL_TIMEOUT,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        channel_factory: ChannelFactory | None = None,
    ) -> None:
        if not timeout > 0:
            raise AetherConfigError(f"timeout must be more than 0 s, got {timeout}")
        if max_message_bytes < 1024:
            raise AetherConfigError(
                f"max_message_bytes must be at least 1024, got {max_message_bytes}"
            )
        if hub_url is None:
            hub_url = os.environ.get(HUB_URL_ENV) or DEFAULT_HUB_URL
        parsed = parse_hub_urls(hub_url)
        tls = TlsFiles(
            ca_file=tls_ca_file,
            cert_file=tls_cert_file,
            key_file=tls_key_file,
            server_name=tls_server_name,
        )
        self._addresses = tuple(HubAddress(a.host, a.port, tls=a.tls or tls.given) for a in parsed)
        #: The address in use: the first, until a call fails over to the next.
        self._current = 0
        self._tls = tls
        # Built now so that a missing or bad certificate file fails here, by name, rather
        # than as an unreachable Hub at the first call.
        self._ssl: ssl.SSLContext | None = (
            _tls_context(tls) if self._address.tls and channel_factory is None else None
        )
        if isinstance(token, SecretStr):
            token = token.get_secret_value()
        self._token: SecretStr | None = SecretStr(token) if token else None
        # No token in any log record (hpack prints headers at DEBUG).
        install_log_redaction(token or "")
        self._timeout = float(timeout)
        self._max_message_bytes = max_message_bytes
        self._channel_factory = channel_factory
        self._channel: Channel | None = None
        self._stub: wire_client.TaskServiceStub | None = None
        self._opening: asyncio.Lock | None = None
        # Whether the Hub ever answered: until then a connection it closes at once may be a
        # TLS port reached in plaintext (map_exception's fresh_connection).
        self._answered = False
        self._closed = False
        # False once the Hub showed it has no SubmitTasks (it predates it).
        self._batch_supported = True

    @classmethod
    def from_env(
        cls,
        *,
        env: Mapping[str, str] | None = None,
        token_env: str = CLIENT_TOKEN_ENV,
        timeout: float = DEFAULT_CALL_TIMEOUT,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        channel_factory: ChannelFactory | None = None,
    ) -> TaskClient:
        """A client configured from the environment (`env`, default `os.environ`).

        Reads `AETHER_HUB_URL`, the client token from `token_env` (default
        `AETHER_CLIENT_TOKEN`; none sent when unset or empty) and `AETHER_TLS_CA_FILE`,
        `AETHER_TLS_CERT_FILE`, `AETHER_TLS_KEY_FILE`, `AETHER_TLS_SERVER_NAME` (as
        `AgentConfig.from_env` does). A bad address raises `AetherConfigError`.
        """
        environ = os.environ if env is None else env
        names = AgentConfig.ENV_VARS

        def read(name: str) -> str | None:
            return environ.get(names[name]) or None

        hub_url = read("hub_url") or DEFAULT_HUB_URL
        try:
            parse_hub_urls(hub_url)
        except AetherConfigError as exc:
            raise AetherConfigError(f"{HUB_URL_ENV}: {exc}", variable=HUB_URL_ENV) from None
        return cls(
            hub_url,
            token=environ.get(token_env) or None,
            tls_ca_file=read("tls_ca_file"),
            tls_cert_file=read("tls_cert_file"),
            tls_key_file=read("tls_key_file"),
            tls_server_name=read("tls_server_name"),
            timeout=timeout,
            max_message_bytes=max_message_bytes,
            channel_factory=channel_factory,
        )

    def __repr__(self) -> str:
        token = "***" if self._token is not None else None
        return f"<TaskClient hub={describe_hub_addresses(self._addresses)} token={token}>"

    @property
    def address(self) -> HubAddress:
        """The Hub's address in use (`tls` is true when the connection uses TLS): the first
        of `addresses` until a call fails over to another."""
        return self._addresses[self._current]

    @property
    def addresses(self) -> tuple[HubAddress, ...]:
        """Every address the client may use, in order (one unless `hub_url` lists more)."""
        return self._addresses

    @property
    def _address(self) -> HubAddress:
        return self._addresses[self._current]

    @property
    def timeout(self) -> float:
        """Seconds each unary call may take."""
        return self._timeout

    # -- connection ----------------------------------------------------------------------

    async def connect(self) -> None:
        """Connect now, rather than at the first call.

        Raises `AetherConnectionError` when the Hub cannot be reached. Calls connect on
        their own; this only makes an unreachable Hub fail early.
        """
        if not self._fails_over:
            channel = await self._ensure_channel()
            try:
                await channel.__connect__()
            except Exception as exc:
                raise self._error(exc, "Connect") from None
            return
        failures: builtins.list[tuple[HubAddress, AetherError]] = []
        for _ in self._addresses:
            address = self._address
            try:
                await self._connected_stub()
            except AetherError as exc:
                if not _fail_over_after(exc):
                    raise
                failures.append((address, exc))
                self._fail_over(address)
                continue
            return
        raise failover_error("Connect", failures)

    async def close(self) -> None:
        """Close the connection. Idempotent; the client cannot be used afterwards."""
        self._closed = True
        self._drop()

    async def __aenter__(self) -> TaskClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _ensure_channel(self) -> Channel:
        if self._closed:
            raise AgentStateError("this TaskClient is closed")
        if self._channel is not None:
            return self._channel
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:  # concurrent first calls share one connection
            if self._channel is None:
                try:
                    channel = await self._open_channel()
                except Exception as exc:
                    raise self._error(exc, "Connect") from None
                token = self._token.get_secret_value() if self._token is not None else None
                self._stub = wire_client.TaskServiceStub(
                    channel,
                    metadata={"authorization": f"Bearer {token}"} if token else None,
                    max_message_bytes=self._max_message_bytes,
                )
                self._channel = channel
            return self._channel

    async def _open_channel(self) -> Channel:
        if self._channel_factory is not None:
            return await self._channel_factory()
        return open_hub_channel(self._address, context=self._ssl, server_name=self._tls.server_name)

    async def _stub_now(self) -> wire_client.TaskServiceStub:
        await self._ensure_channel()
        assert self._stub is not None
        return self._stub

    def _drop(self) -> None:
        channel, self._channel, self._stub = self._channel, None, None
        if channel is not None:
            channel.close()

    def _error(self, exc: BaseException, operation: str, task_id: str | None = None) -> AetherError:
        secret = self._token.get_secret_value() if self._token is not None else None
        if secret is None:
            hint = (
                "wants a client token and none was sent: pass TaskClient(token=...) or set "
                f"{CLIENT_TOKEN_ENV} to the token the Hub was started with."
            )
        else:
            hint = (
                "rejected the client token: check that it is the token the Hub was started "
                f"with (TaskClient(token=...) / {CLIENT_TOKEN_ENV})."
            )
        return map_exception(
            exc,
            hub_url=str(self._address),
            operation=operation,
            secret=secret,
            task_id=task_id,
            auth_hint=hint,
            fresh_connection=not self._answered,
            client_certificate=bool(self._tls.cert_file),
        )

    @property
    def _fails_over(self) -> bool:
        # A channel factory makes its own connections: there is nothing to fail over to.
        return len(self._addresses) > 1 and self._channel_factory is None

    async def _connected_stub(self) -> wire_client.TaskServiceStub:
        """The stub, its channel connected now (within `timeout`): a failure here means
        nothing was sent, so any call may go to the next address."""
        channel = await self._ensure_channel()
        try:
            await asyncio.wait_for(channel.__connect__(), self._timeout)
        except Exception as exc:
            self._drop()
            raise self._error(exc, "Connect") from None
        assert self._stub is not None
        return self._stub

    def _fail_over(self, failed: HubAddress) -> None:
        """Move on from `failed` to the next address (unless a concurrent call already did)."""
        if self._address != failed:
            return
        self._drop()
        self._current = (self._current + 1) % len(self._addresses)

    async def _call(
        self,
        operation: str,
        call: Callable[[wire_client.TaskServiceStub], Awaitable[_T]],
        task_id: str | None = None,
        *,
        idempotent: bool | None = None,
    ) -> _T:
        """Make `call` on the stub; failures become `aether.errors` types.

        With several addresses, a call that cannot connect goes to the next address, and
        so does one that failed on its way when it is `idempotent` (default: the reads of
        `_READ_OPERATIONS`); each address is tried once per call.
        """
        if not self._fails_over:
            # No reconnect logic here: a grpclib channel opens a new connection for the
            # next call after its connection failed.
            stub = await self._stub_now()
            try:
                reply = await call(stub)
            except Exception as exc:
                raise self._error(exc, operation, task_id) from None
            self._answered = True
            return reply
        safe = operation in _READ_OPERATIONS if idempotent is None else idempotent
        failures: builtins.list[tuple[HubAddress, AetherError]] = []
        for _ in self._addresses:
            address = self._address
            try:
                stub = await self._connected_stub()
            except AetherError as exc:
                if not _fail_over_after(exc):
                    raise
                failures.append((address, exc))
                self._fail_over(address)
                continue
            try:
                reply = await call(stub)
            except Exception as exc:
                error = self._error(exc, operation, task_id)
                # The request may have reached the Hub: only a safe call is made again.
                if not (safe and _fail_over_after(error)):
                    raise error from None
                failures.append((address, error))
                self._fail_over(address)
                continue
            self._answered = True
            return reply
        raise failover_error(operation, failures)

    # -- tasks ---------------------------------------------------------------------------

    async def submit(
        self,
        description: str,
        *,
        payload: bytes | str = b"",
        task_type: str = "",
        target_agent_id: str = "",
        priority: int = 0,
        metadata: Mapping[str, str] | None = None,
        workflow_id: str = "",
        max_attempts: int = 0,
        timeout_seconds: int = 0,
        idempotency_key: str = "",
    ) -> SubmittedTask:
        """Queue a task; the Hub routes it to an agent when one is free.

        `payload` is the task's input (a str is sent as UTF-8). A task goes to
        `target_agent_id` if given, else to an agent whose `task_types` capability lists
        `task_type`, else to any agent. Higher `priority` runs first. `max_attempts` bounds
        deliveries (0: the Hub's default) and `timeout_seconds` times the task out that long
        after submission (0: never). Submitting an `idempotency_key` again returns the first
        task's id. A number outside the wire's int32 range raises `ValueError`, a task
        larger than `max_message_bytes` `MessageTooLargeError`, both without sending it; a
        field the Hub refuses raises `HubError` (INVALID_ARGUMENT).
        """
        try:
            # The model checks what the wire would silently wrap (int32 ranges).
            request = SubmitTaskRequest(
                description=description,
                payload=payload.encode("utf-8") if isinstance(payload, str) else bytes(payload),
                task_type=task_type,
                target_agent_id=target_agent_id,
                priority=priority,
                metadata=dict(metadata or {}),
                workflow_id=workflow_id,
                max_attempts=max_attempts,
                timeout_seconds=timeout_seconds,
                idempotency_key=idempotency_key,
            ).to_wire()
        except ValidationError as exc:
            first = exc.errors(include_input=False, include_url=False)[0]
            where = ".".join(str(part) for part in first["loc"])
            raise ValueError(f"submit(): {where}: {first['msg']}") from None
        size = len(bytes(request))
        if size > self._max_message_bytes:
            raise self._too_large(size)
        return await self._submit_wire(request)

    def _too_large(self, size: int) -> MessageTooLargeError:
        return MessageTooLargeError(
            f"SubmitTask: the task is {size} bytes, more than max_message_bytes="
            f"{self._max_message_bytes}; send large inputs by reference (e.g. a URL)"
        )

    async def _submit_wire(self, request: pb.SubmitTaskRequest) -> SubmittedTask:
        with client_span("/aether.v1.TaskService/SubmitTask") as call:
            reply = await self._call(
                "SubmitTask",
                lambda stub: stub.submit_task(
                    request, timeout=self._timeout, metadata=call.metadata
                ),
                # Repeating it is harmless only when the key finds the first task.
                idempotent=bool(request.idempotency_key),
            )
            call.set("aether.task.id", reply.task_id)
        return SubmittedTask(reply.task_id, self)

    async def submit_many(
        self,
        tasks: Iterable[SubmitTaskRequest | str],
        *,
        chunk_size: int = MAX_SUBMIT_BATCH,
    ) -> builtins.list[SubmittedTask | AetherError]:
        """Queue many tasks with few calls; one outcome per task, in the order given.

        Each task is a `SubmitTaskRequest` (the arguments of `submit`, checked when the
        model is built) or just a description. They go out in `SubmitTasks` calls of at
        most `chunk_size` tasks (1 to 1000) that each stay within `max_message_bytes`,
        one call after another, so the tasks are queued in the order given. The Hub
        treats each task as `submit` would: its own idempotency key, its own refusal.

        Returns, for each task, its `SubmittedTask`, or the error `submit` would have
        raised for it (a `HubError` for a field the Hub refused, `PermissionDeniedError`,
        a `MessageTooLargeError` for a task too large to send, which is not sent); the
        other tasks are queued regardless. When a whole call fails (the Hub cannot be
        reached, refuses the token, cannot store now), each task of that call and of the
        calls not made yet gets that error, while the ids of the tasks queued before it
        are kept: check each item (`isinstance(item, SubmittedTask)`), and submit the
        failed ones again (with idempotency keys, a repeat is harmless). A Hub that has no
        `SubmitTasks` (UNIMPLEMENTED) is sent one `SubmitTask` per task instead, up to 64
        at once.
        """
        if not 1 <= chunk_size <= MAX_SUBMIT_BATCH:
            raise ValueError(f"chunk_size must be from 1 to {MAX_SUBMIT_BATCH}, got {chunk_size}")
        outcomes: builtins.list[SubmittedTask | AetherError | None] = []
        chunk: builtins.list[tuple[int, pb.SubmitTaskRequest]] = []
        chunk_bytes = 0
        # Room in one SubmitTasks message: each task costs its bytes plus a tag and a length.
        budget = self._max_message_bytes - 16
        failed: AetherError | None = None
        for task in tasks:
            model = SubmitTaskRequest(description=task) if isinstance(task, str) else task
            request = model.to_wire()
            size = len(bytes(request))
            outcomes.append(None)
            if size > self._max_message_bytes:
                outcomes[-1] = self._too_large(size)
                continue
            cost = size + 6
            if chunk and (len(chunk) >= chunk_size or chunk_bytes + cost > budget):
                failed = await self._submit_chunk(chunk, outcomes, failed)
                chunk, chunk_bytes = [], 0
            chunk.append((len(outcomes) - 1, request))
            chunk_bytes += cost
        if chunk:
            await self._submit_chunk(chunk, outcomes, failed)
        return [item for item in outcomes if item is not None]

    async def _submit_chunk(
        self,
        chunk: Sequence[tuple[int, pb.SubmitTaskRequest]],
        outcomes: builtins.list[SubmittedTask | AetherError | None],
        failed: AetherError | None,
    ) -> AetherError | None:
        """Submit one chunk of `submit_many`, writing each task's outcome in its place;
        the error of a failed call (that every later chunk then gets), else `failed`."""
        if failed is None:
            if self._batch_supported:
                try:
                    self._place(chunk, await self._submit_tasks(chunk), outcomes)
                    return None
                except AetherError as exc:
                    if not method_not_served(exc):
                        failed = exc
                    else:
                        self._batch_supported = False  # a Hub that predates SubmitTasks
            if failed is None:
                await self._submit_each(chunk, outcomes)
                return None
        for index, _ in chunk:
            outcomes[index] = failed
        return failed

    async def _submit_tasks(
        self, chunk: Sequence[tuple[int, pb.SubmitTaskRequest]]
    ) -> builtins.list[pb.SubmitTasksResult]:
        request = pb.SubmitTasksRequest(tasks=[wire for _, wire in chunk])
        with client_span(
            "/aether.v1.TaskService/SubmitTasks", {"aether.tasks.count": len(chunk)}
        ) as call:
            reply = await self._call(
                "SubmitTasks",
                lambda stub: stub.submit_tasks(
                    request, timeout=self._timeout, metadata=call.metadata
                ),
                idempotent=all(wire.idempotency_key for _, wire in chunk),
            )
        if len(reply.results) != len(chunk):
            raise HubError(
                f"SubmitTasks: the Hub at {self._address} answered {len(reply.results)}"
                f" results for {len(chunk)} tasks"
            )
        return reply.results

    def _place(
        self,
        chunk: Sequence[tuple[int, pb.SubmitTaskRequest]],
        results: Sequence[pb.SubmitTasksResult],
        outcomes: builtins.list[SubmittedTask | AetherError | None],
    ) -> None:
        for (index, _), result in zip(chunk, results, strict=True):
            if result.submitted is not None:
                outcomes[index] = SubmittedTask(result.submitted.task_id, self)
                continue
            error = result.error or pb.SubmitTaskError(
                code=Status.UNKNOWN.value, message="the Hub answered neither an id nor an error"
            )
            try:
                status = Status(error.code)
            except ValueError:
                status = Status.UNKNOWN
            outcomes[index] = self._error(GRPCError(status, error.message), "SubmitTasks")

    async def _submit_each(
        self,
        chunk: Sequence[tuple[int, pb.SubmitTaskRequest]],
        outcomes: builtins.list[SubmittedTask | AetherError | None],
    ) -> None:
        """The unary fallback: one SubmitTask per task, up to `_UNARY_IN_FLIGHT` at once."""
        slots = asyncio.Semaphore(_UNARY_IN_FLIGHT)

        async def one(index: int, request: pb.SubmitTaskRequest) -> None:
            async with slots:
                try:
                    outcomes[index] = await self._submit_wire(request)
                except AetherError as exc:
                    outcomes[index] = exc

        await asyncio.gather(*(one(index, request) for index, request in chunk))

    async def get(self, task_id: str) -> Task:
        """The task now. An unknown id raises `TaskNotFoundError`."""
        request = pb.GetTaskRequest(task_id=task_id)
        wire = await self._call(
            "GetTask", lambda stub: stub.get_task(request, timeout=self._timeout), task_id
        )
        return Task.from_wire(wire)

    async def cancel(self, task_id: str, *, reason: str = "") -> CancelTaskResponse:
        """Cancel a pending or running task; `reason` is passed on to its agent.

        Returns whether this call cancelled it (`success`) and the task's state after the
        call; a task already final is not cancelled (`success` false). An unknown id raises
        `TaskNotFoundError`.
        """
        request = pb.CancelTaskRequest(task_id=task_id, reason=reason)
        reply = await self._call(
            "CancelTask", lambda stub: stub.cancel_task(request, timeout=self._timeout), task_id
        )
        return CancelTaskResponse.from_wire(reply)

    async def watch(self, task_id: str) -> AsyncIterator[Task]:
        """The task now, then again after every change, ending with its final state.

        Raises `TaskNotFoundError` for an unknown id and `HubError` when the Hub ends the
        watch before the task is final (e.g. it shut down). Breaking out early leaves the
        task alone; wrap the iterator in `contextlib.aclosing` to end the watch at once.

        With several addresses, a watch that cannot connect, breaks or is ended early
        watches again at the next address (it then yields the task's state there again).
        """
        # Failures since the last update, one per address at most (several addresses).
        failures: builtins.list[tuple[HubAddress, AetherError]] = []
        while True:
            address = self._address
            if self._fails_over:
                try:
                    stub = await self._connected_stub()
                except AetherError as exc:
                    if not _fail_over_after(exc):
                        raise
                    failures.append((address, exc))
                    if len(failures) >= len(self._addresses):
                        raise failover_error("WatchTask", failures) from None
                    self._fail_over(address)
                    continue
            else:
                stub = await self._stub_now()
            updates = stub.watch_task(pb.WatchTaskRequest(task_id=task_id), timeout=None)
            try:
                async for update in updates:
                    self._answered = True
                    failures.clear()
                    if update.task is None:
                        continue
                    task = Task.from_wire(update.task)
                    yield task
                    if task.state in TERMINAL_TASK_STATES:
                        return
            except Exception as exc:
                error = self._error(exc, "WatchTask", task_id)
                if not (self._fails_over and _fail_over_after(error)):
                    raise error from None
            else:
                error = HubError(
                    f"WatchTask: the Hub at {address} ended the watch of task {task_id!r} "
                    "before the task finished",
                    retryable=True,
                )
                if not self._fails_over:
                    raise error
            finally:
                # Leaving at a final state (or early) must end the call now, not when the
                # garbage collector finds the stream.
                close = getattr(updates, "aclose", None)
                if close is not None:
                    await close()
            failures.append((address, error))
            if len(failures) >= len(self._addresses):
                raise failover_error("WatchTask", failures)
            self._fail_over(address)

    async def wait(self, task_id: str, *, timeout: float | None = None) -> Task:
        """Wait until the task is final (succeeded, failed, cancelled, timed out); return it.

        With a `timeout` (seconds), raise `TaskWaitTimeoutError` (a `TimeoutError`) naming
        the task and its last state when it is not final by then; the task goes on.
        """
        seen: Task | None = None

        async def follow() -> Task:
            nonlocal seen
            async for task in self.watch(task_id):
                seen = task
            # watch() ends only after yielding a final state (or raises).
            assert seen is not None
            return seen

        if timeout is None:
            return await follow()
        try:
            return await asyncio.wait_for(follow(), timeout)
        except asyncio.TimeoutError:
            state = seen.state.name if seen is not None else "not seen yet"
            raise TaskWaitTimeoutError(
                f"task {task_id!r} did not finish within {timeout:g} s (state: {state})",
                task_id=task_id,
                task=seen,
                timeout=timeout,
            ) from None

    async def list(
        self,
        *,
        state: TaskState | None = None,
        task_type: str = "",
        agent_id: str = "",
        workflow_id: str = "",
        page_size: int = 100,
        limit: int | None = None,
        include_payloads: bool = False,
    ) -> AsyncIterator[Task]:
        """Tasks matching every given filter, newest first, fetched a page at a time.

        `agent_id` matches tasks assigned or addressed to that agent. `page_size` (1 to
        1000) is how many tasks each call to the Hub fetches at most (the Hub ends a page
        early rather than exceed its message limit); `limit` stops after that many tasks
        (None: all of them). Payloads and results are left out (empty) unless
        `include_payloads`; `get()` reads one task whole.
        """
        if not 1 <= page_size <= _MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be from 1 to {_MAX_PAGE_SIZE}, got {page_size}")
        if limit is not None and limit < 0:
            raise ValueError(f"limit must not be negative, got {limit}")
        remaining = limit
        page_token = ""
        while remaining is None or remaining > 0:
            size = page_size if remaining is None else min(page_size, remaining)
            request = pb.ListTasksRequest(
                state=TaskState.UNSPECIFIED if state is None else state,
                agent_id=agent_id,
                task_type=task_type,
                workflow_id=workflow_id,
                limit=size,
                page_token=page_token,
                include_payloads=include_payloads,
            )
            page = await self._list_page(request)
            for wire in page.tasks:
                yield Task.from_wire(wire)
            if remaining is not None:
                remaining -= len(page.tasks)
            page_token = page.next_page_token
            if not page_token or not page.tasks:
                return

    # -- the Hub's state -------------------------------------------------------------------

    async def list_agents(
        self, *, task_type: str = "", agent_id: str = ""
    ) -> builtins.list[AgentInfo]:
        """The agents connected to the Hub now, ordered by id.

        `task_type` keeps the agents that would be sent a task of that type (those that list
        it in `capabilities["task_types"]`); `agent_id` keeps that agent only.
        """
        request = pb.ListAgentsRequest(task_type=task_type, agent_id=agent_id)
        reply = await self._call(
            "ListAgents", lambda stub: stub.list_agents(request, timeout=self._timeout)
        )
        return [AgentInfo.from_wire(agent) for agent in reply.agents]

    async def queue_stats(self) -> QueueStats:
        """Pending and running tasks per task type, with the connected agents serving each."""
        request = pb.GetQueueStatsRequest()
        reply = await self._call(
            "GetQueueStats", lambda stub: stub.get_queue_stats(request, timeout=self._timeout)
        )
        return QueueStats.from_wire(reply)

    async def _list_page(self, request: pb.ListTasksRequest) -> pb.ListTasksResponse:
        return await self._call(
            "ListTasks", lambda stub: stub.list_tasks(request, timeout=self._timeout)
        )


def _tls_context(tls: TlsFiles) -> ssl.SSLContext:
    try:
        return ssl_context(tls)
    except (OSError, ssl.SSLError) as exc:
        files = [
            f"{name}={value}"
            for name, value in (
                ("tls_ca_file", tls.ca_file),
                ("tls_cert_file", tls.cert_file),
                ("tls_key_file", tls.key_file),
            )
            if value
        ]
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise AetherConfigError(
            f"cannot load the TLS files ({', '.join(files) or 'system CAs'}): {reason}",
            variable="tls_ca_file",
        ) from None


def _fail_over_after(error: AetherError) -> bool:
    """Whether `error` is worth trying another Hub address for: the Hub could not be
    reached, the connection broke or timed out, or the Hub answered UNAVAILABLE."""
    return isinstance(error, AetherConnectionError) or error.status is Status.UNAVAILABLE
