"""`HubServer`: the dev Hub's services assembled on one grpclib server.

```python
hub = HubServer(HubConfig(port=0, dev=True))
await hub.start()
print(hub.address)          # "127.0.0.1:<port>"
...
await hub.stop()
```

Serves the six `aether.v1` services, `grpc.health.v1.Health` and server reflection (v1
and v1alpha). Tests and the `aether_hub.testing` fixture reach the parts through typed
properties (`queue`, `sessions`, `agents`, `memory`, `bus`, ...).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, TypeVar

import grpclib.const
import grpclib.protocol
import grpclib.server

from aether import install_log_redaction
from aether_hub import inspection
from aether_hub._wire import health_pb, pb
from aether_hub.agent_service import AgentService
from aether_hub.agents_jetstream import open_jetstream_agents
from aether_hub.auth import (
    AgentRegistry,
    AgentRegistryUnavailableError,
    AgentStore,
    ClientAuth,
    EnrolmentError,
    RegisterThrottle,
    SqliteAgentStore,
    hash_secret,
    parse_trust_level,
    verify_secret,
)
from aether_hub.builtin_tools import registry_with_builtins
from aether_hub.bus import BusError, MessageBus
from aether_hub.clock import Clock, SystemClock
from aether_hub.connections import ConnectionLimits
from aether_hub.db import Database
from aether_hub.dblock import DatabaseLock
from aether_hub.guard import GuardedService
from aether_hub.health import HealthService
from aether_hub.llm_providers import LLMProvider, make_llm_provider
from aether_hub.llm_service import LLMService, ModelPolicy
from aether_hub.memory_jetstream import JetStreamMemoryStore, open_jetstream_memory
from aether_hub.memory_service import MemoryLimits, MemoryService, MemoryUnavailableError
from aether_hub.messaging_service import MessagingService
from aether_hub.metrics import HubMetrics, LiveState, MetricsServer
from aether_hub.nats_bus import NatsBus, create_bus
from aether_hub.permissions import SubjectPolicy
from aether_hub.reflection import ReflectionIndex, ReflectionV1, ReflectionV1Alpha
from aether_hub.sessions import SessionRegistry
from aether_hub.settings import ConfigError, HubConfig
from aether_hub.statuspage import StatusPage
from aether_hub.taskreplica import TaskReplication
from aether_hub.tasks import TaskQueue, TaskService
from aether_hub.taskstore import StoreUnavailableError, TaskStore
from aether_hub.tls import server_ssl_context
from aether_hub.tool_registry import ToolDefinitionError, ToolPluginError, ToolRegistry, ToolService

__all__ = ("HubServer", "Servable")

log = logging.getLogger("aether_hub")


class Servable(Protocol):
    """A grpclib service with the generated message-size guard."""

    max_message_bytes: int

    def __mapping__(self) -> dict[str, grpclib.const.Handler]: ...


class _Server(grpclib.server.Server):
    """grpclib's server, whose `close_connections()` also drops the open connections.

    grpclib's `close()` cancels the running requests but leaves client connections open and
    keeps serving new requests on them; a Hub stopped inside a longer-lived process (tests,
    `aether_hub.testing`) must look to its agents like one that went away. Relies on grpclib's
    `_protocol_factory` (grpclib is pinned).
    """

    def __init__(
        self, handlers: Sequence[Servable], limits: ConnectionLimits | None = None
    ) -> None:
        super().__init__(handlers)
        self._protocols: weakref.WeakSet[grpclib.protocol.H2Protocol] = weakref.WeakSet()
        self.limits = limits

    def _protocol_factory(self) -> grpclib.protocol.H2Protocol:
        protocol = super()._protocol_factory()
        if self.limits is not None:
            # --max-connections and --idle-timeout (aether_hub/connections.py).
            protocol = self.limits.wrap(protocol)
        self._protocols.add(protocol)
        return protocol

    def close_connections(self) -> None:
        """Close every client connection now (clients see the connection lost)."""
        for protocol in list(self._protocols):
            connection = getattr(protocol, "connection", None)
            if connection is not None:
                connection.close()


_T = TypeVar("_T")
# Seconds a starting replica keeps trying to open a JetStream bucket: a cluster that just
# formed (or restarted) may have no peers to place it on for a moment.
_OPEN_PATIENCE = 30.0


async def _patiently(open_bucket: Callable[[], Awaitable[_T]], error: type[Exception]) -> _T:
    deadline = time.monotonic() + _OPEN_PATIENCE
    while True:
        try:
            return await open_bucket()
        except error:
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.5)


def _bind(host: str, port: int) -> socket.socket:
    """A listening-ready socket on host:port (port 0 picks a free one)."""
    infos = socket.getaddrinfo(
        host, port, family=socket.AF_UNSPEC, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    if not infos:  # pragma: no cover - getaddrinfo raises instead
        raise OSError(f"cannot resolve {host!r}")
    errors: list[str] = []
    for family, type_, proto, _, addr in infos:
        sock = socket.socket(family, type_, proto)
        try:
            if os.name != "nt":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(addr)
        except OSError as exc:
            sock.close()
            errors.append(str(exc.strerror or exc))
            continue
        sock.setblocking(False)
        return sock
    raise OSError(f"cannot listen on {host}:{port}: " + "; ".join(dict.fromkeys(errors)))


class HubServer:
    """The development Hub: every service on one grpclib server, state in one database."""

    def __init__(
        self,
        config: HubConfig | None = None,
        *,
        clock: Clock | None = None,
        extra_services: Sequence[Servable] = (),
    ) -> None:
        self.config = config or HubConfig()
        self._clock: Clock = clock or SystemClock()
        self._extra = tuple(extra_services)
        self._server: _Server | None = None
        self._sock: socket.socket | None = None
        self._port: int | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._started = False
        self._stopped = False
        self._stop_lock = asyncio.Lock()
        self._db: Database | None = None
        self._db_lock: DatabaseLock | None = None
        self._agents: AgentStore | None = None
        self._sessions: SessionRegistry | None = None
        self._queue: TaskQueue | None = None
        self._agent_service: AgentService | None = None
        self._task_service: TaskService | None = None
        self._memory: MemoryService | None = None
        self._bus: MessageBus | None = None
        # With --store jetstream: the link to the other replicas, and its NATS connection.
        self._replica: TaskReplication | None = None
        self._store_link: NatsBus | None = None
        self._memory_store: JetStreamMemoryStore | None = None
        self._messaging: MessagingService | None = None
        self._llm: LLMService | None = None
        self._llm_provider: LLMProvider | None = None
        self._tools: ToolService | None = None
        self._tool_registry: ToolRegistry | None = None
        self._health: HealthService | None = None
        self._services: list[Servable] = []
        # This Hub's own metrics registry (several Hubs in one process never collide).
        self._metrics = HubMetrics()
        self._metrics_server: MetricsServer | None = None

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Open the database, build the services and listen. Raises ConfigError/OSError."""
        config = self._begin()
        try:
            await self._build(config, config.client_token())
            if config.metrics_port:
                metrics_server = MetricsServer(
                    self._metrics,
                    host=config.host,
                    port=config.metrics_port,
                    pages=StatusPage(self.sessions, self.queue).respond,
                )
                await metrics_server.start()
                self._metrics_server = metrics_server
            ssl_context = server_ssl_context(config)
            server = _Server(
                self._services,
                ConnectionLimits(
                    max_connections=config.max_connections,
                    idle_timeout=config.idle_timeout_seconds,
                ),
            )
            sock = _bind(config.host, config.port)
            self._sock = sock
            await server.start(sock=sock, ssl=ssl_context)
            self._server = server
            self._port = int(sock.getsockname()[1])
        except BaseException:
            self._stopped = True  # a failed start leaves nothing to stop
            await self._close_parts()
            raise
        self._tasks.append(asyncio.create_task(self._sweep_loop(), name="aether-hub-sweep"))
        if self.queue.store is not None:
            self._tasks.append(asyncio.create_task(self._flush_loop(), name="aether-hub-flush"))
        log.info(
            "Aether Hub listening on %s%s",
            self.address,
            (" (TLS, client certificates required)" if config.tls_client_ca_file else " (TLS)")
            if config.tls
            else "",
        )
        if not config.dev:
            await self._warn_if_nobody_enrolled()

    async def _warn_if_nobody_enrolled(self) -> None:
        try:
            enrolled = await self.agents.list_agents()
        except AgentRegistryUnavailableError as exc:
            # The Hub serves already; Register answers UNAVAILABLE until the store is back.
            log.warning("cannot list the enrolled agents: %s", exc)
            return
        if not enrolled:
            log.warning(
                "no agents are enrolled and --dev is off: every Register will be refused"
                " (enrol agents with `aether hub agents add` or --config, or use --dev)"
            )

    def _begin(self) -> HubConfig:
        if self._started:
            raise RuntimeError("HubServer already started (or built with build_services())")
        self._started = True
        self.config.validate()
        return self.config

    async def build_services(self) -> tuple[Servable, ...]:
        """Open the database and build every service handler, without opening a socket.

        For serving the Hub over another transport (`aether_hub.testing` uses grpclib's
        in-memory channel): the handlers are what `start()` would serve. Nothing runs in
        the background; call `sweep()` to expire sessions and deadlines. Use either this or
        `start()`, once; `stop()` closes what it opened. Raises `ConfigError`.
        """
        config = self._begin()
        try:
            await self._build(config, config.client_token())
        except BaseException:
            self._stopped = True
            await self._close_parts()
            raise
        return tuple(self._services)

    async def _build(self, config: HubConfig, client_token: str | None) -> None:
        # No secret or token in any log record (hpack prints headers at DEBUG).
        install_log_redaction(client_token or "")
        clock = self._clock
        if config.db_path is not None:
            # One Hub per database file: a second one is refused, naming the holder.
            db_lock = DatabaseLock(config.db_path)
            db_lock.acquire()
            self._db_lock = db_lock
        db = Database(config.db_path)
        self._db = db
        # The --config agents' secrets and trust levels are checked now, before anything
        # is opened; they are written once the enrolments' store is open (with
        # --store jetstream that is after the link to JetStream).
        configured = self._configured_agents()
        if config.store != "jetstream":
            self._agents = SqliteAgentStore(AgentRegistry(db))
            await self._enrol_configured_agents(self._agents, configured)
        sessions = SessionRegistry(
            db,
            heartbeat_interval=float(config.heartbeat_interval_seconds),
            grace=float(config.session_grace_seconds),
            clock=clock.monotonic,
            wall_clock=clock.time,
        )
        self._sessions = sessions
        queue = TaskQueue(
            store=TaskStore(db) if db.is_persistent and config.store == "sqlite" else None,
            clock=clock,
            default_max_attempts=config.default_max_attempts,
            terminal_retention=config.terminal_task_retention,
            terminal_retention_bytes=config.terminal_task_retention_bytes,
            terminal_retention_seconds=config.terminal_task_retention_seconds,
        )
        self._queue = queue
        sessions.on_end(queue.session_ended)
        queue.metrics = self._metrics
        self._metrics.watch(
            LiveState(
                pending_by_type=queue.pending_by_type,
                running_by_type=queue.running_by_type,
                agents_connected=sessions.__len__,
            )
        )
        self._task_service = TaskService(queue, ClientAuth(client_token, sessions), sessions)
        self._memory = MemoryService(
            db,
            sessions,
            MemoryLimits(
                agent_quota_keys=config.memory_quota_keys,
                agent_quota_bytes=config.memory_quota_bytes,
            ),
            clock=clock.time,
            access=queue,
        )
        try:
            self._bus = await create_bus(
                config.nats_url, pending_bytes_limit=config.subscriber_max_pending_bytes
            )
        except BusError as exc:
            raise ConfigError(str(exc)) from None
        if config.store == "jetstream":
            await self._open_replica(config, queue, sessions)
            await self._open_shared_memory(config)
            self._agents = await self._open_shared_agents(config, db)
            await self._enrol_configured_agents(self._agents, configured)
        assert self._agents is not None
        # Built once the enrolments' store is chosen and open (see above).
        self._agent_service = AgentService(
            agents=self._agents,
            sessions=sessions,
            queue=queue,
            dev=config.dev,
            default_max_concurrent_tasks=config.default_max_concurrent_tasks,
            clock=clock,
            throttle=RegisterThrottle(
                clock.monotonic,
                free_failures=config.register_free_failures,
                max_lockout_seconds=config.register_max_lockout_seconds,
            ),
        )
        self._messaging = MessagingService(
            self._bus, sessions, SubjectPolicy(config.shared_subjects)
        )
        self._llm = self._build_llm(config, sessions)
        self._tools = self._build_tools(config, db, sessions)
        services: list[Servable] = [
            self._agent_service,
            self._task_service,
            self._llm,
            self._tools,
            self._memory,
            self._messaging,
            *self._extra,
        ]
        names = [str(getattr(s, "SERVICE_NAME", "")) for s in services]
        names = [n for n in names if n]
        names += [
            HealthService.SERVICE_NAME,
            ReflectionV1.SERVICE_NAME,
            ReflectionV1Alpha.SERVICE_NAME,
        ]
        self._health = HealthService(names)
        index = ReflectionIndex(names)
        services += [self._health, ReflectionV1(index), ReflectionV1Alpha(index)]
        for service in services:
            service.max_message_bytes = config.max_message_bytes
        self._services = [GuardedService(service, metrics=self._metrics) for service in services]

    async def _open_replica(
        self, config: HubConfig, queue: TaskQueue, sessions: SessionRegistry
    ) -> None:
        """Share the tasks with the other Hub replicas through JetStream."""
        assert config.nats_url  # HubConfig.validate
        try:
            link = await NatsBus.connect(config.nats_url)
        except BusError as exc:
            raise ConfigError(f"--store jetstream: {exc}") from None
        self._store_link = link

        def agents() -> pb.ListAgentsResponse:
            return inspection.agent_infos(sessions.live(), pb.ListAgentsRequest())

        try:
            replica = await TaskReplication.open(
                link.client,
                replicas=config.store_replicas,
                timeout=config.replica_timeout_seconds,
                agents=agents,
            )
            queue.attach(replica)
            loaded = await replica.start(queue)
        except StoreUnavailableError as exc:
            raise ConfigError(f"--store jetstream: {exc}") from None
        self._replica = replica
        log.info(
            "tasks shared through JetStream (%d replicas of the buckets) as Hub replica %s;"
            " %d stored tasks loaded",
            config.store_replicas,
            replica.hub_id,
            loaded,
        )

    async def _open_shared_memory(self, config: HubConfig) -> None:
        """Keep the agents' memory in JetStream too, so every replica reads the same."""
        assert self._store_link is not None and self._memory is not None
        try:
            client = self._store_link.client
            limits = MemoryLimits(
                agent_quota_keys=config.memory_quota_keys,
                agent_quota_bytes=config.memory_quota_bytes,
            )
            self._memory_store = await _patiently(
                lambda: open_jetstream_memory(
                    client, replicas=config.store_replicas, limits=limits, clock=self._clock.time
                ),
                MemoryUnavailableError,
            )
        except MemoryUnavailableError as exc:
            raise ConfigError(f"--store jetstream: {exc}") from None
        self._memory.backend = self._memory_store

    async def _open_shared_agents(self, config: HubConfig, db: Database) -> AgentStore:
        """Keep the agent enrolments in JetStream, so an agent enrolled once registers at
        every replica (and a --dev agent is enrolled once, whichever replica it meets)."""
        assert self._store_link is not None
        try:
            client = self._store_link.client
            agents = await _patiently(
                lambda: open_jetstream_agents(client, replicas=config.store_replicas),
                AgentRegistryUnavailableError,
            )
        except AgentRegistryUnavailableError as exc:
            raise ConfigError(f"--store jetstream: {exc}") from None
        if db.is_persistent:
            # Agents enrolled in this replica's --db before it moved to JetStream would
            # silently stop registering: say so once (a read; the table is left alone).
            row = db.conn.execute(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'agents'"
            ).fetchone()
            local = db.conn.execute("SELECT count(*) FROM agents").fetchone()[0] if row[0] else 0
            if local:
                log.warning(
                    "%d agent(s) enrolled in %s are not used with --store jetstream; enrol"
                    " them again with `aether hub agents add ID --secret-env VAR --store"
                    " jetstream --nats-url URL`",
                    local,
                    config.db_path,
                )
        return agents

    def _configured_agents(self) -> list[tuple[str, str, pb.TrustLevel]]:
        """(id, secret, trust level) of each --config agent; ConfigError when one is bad."""
        configured: list[tuple[str, str, pb.TrustLevel]] = []
        for spec in self.config.agents:
            secret = ""
            if spec.secret_env:
                secret = os.environ.get(spec.secret_env, "")
                install_log_redaction(secret)
                if not secret:
                    raise ConfigError(
                        f"agent {spec.agent_id!r}: environment variable {spec.secret_env}"
                        " (its secret_env) is unset or empty"
                    )
            else:
                log.warning("agent %r is configured without a secret", spec.agent_id)
            try:
                level = parse_trust_level(spec.trust_level)
            except EnrolmentError as exc:
                raise ConfigError(f"agent {spec.agent_id!r}: {exc}") from None
            configured.append((spec.agent_id, secret, level))
        return configured

    async def _enrol_configured_agents(
        self, agents: AgentStore, configured: list[tuple[str, str, pb.TrustLevel]]
    ) -> None:
        # Each replica runs this at start. An enrolment that already matches (same trust
        # level, and the secret verifies against the stored salted hash) is left alone,
        # so replicas with the same --config do not rewrite each other's records.
        try:
            for agent_id, secret, level in configured:
                existing = await agents.get(agent_id)
                if (
                    existing is not None
                    and existing.trust_level == level
                    and existing.has_secret == bool(secret)
                    and await asyncio.to_thread(verify_secret, secret, existing.secret_hash)
                ):
                    continue
                hashed = await asyncio.to_thread(hash_secret, secret)
                await agents.add_hashed(agent_id, hashed, level, source="config")
        except EnrolmentError as exc:
            raise ConfigError(str(exc)) from None
        except AgentRegistryUnavailableError as exc:
            raise ConfigError(f"cannot enrol the --config agents: {exc}") from None

    def _build_llm(self, config: HubConfig, sessions: SessionRegistry) -> LLMService:
        try:
            provider = make_llm_provider(
                config.llm_provider,
                base_url=config.llm_base_url,
                api_key_env=config.llm_api_key_env,
            )
        except ValueError as exc:
            raise ConfigError(f"--llm-provider: {exc}") from None
        self._llm_provider = provider
        llm = LLMService(sessions, provider, ModelPolicy.default())
        llm.metrics = self._metrics
        return llm

    def _build_tools(
        self, config: HubConfig, db: Database, sessions: SessionRegistry
    ) -> ToolService:
        registry = registry_with_builtins(db, clock=self._clock.time)
        for module in config.tools:
            try:
                registry.load_plugin(module)
            except (ToolPluginError, ToolDefinitionError) as exc:
                raise ConfigError(f"--tools {module}: {exc}") from None
        self._tool_registry = registry
        return ToolService(sessions, registry)

    async def stop(self) -> None:
        """Stop serving, hand leased tasks back, flush the database, close the bus.

        Idempotent, and safe before `start()`.
        """
        async with self._stop_lock:
            if self._stopped:
                return
            self._stopped = True
            if self._health is not None:
                self._health.set_all(health_pb.HealthCheckResponseServingStatus.NOT_SERVING)
            if self._queue is not None:
                self._queue.shutting_down = True
            for task in self._tasks:
                task.cancel()
            for task in self._tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            self._tasks.clear()
            if self._server is not None:
                self._server.close()
                self._server.close_connections()
                try:
                    await asyncio.wait_for(self._server.wait_closed(), timeout=5.0)
                except asyncio.TimeoutError:
                    log.warning("some connections did not close within 5 s")
            await self._close_parts()
            log.info("Aether Hub stopped")

    async def _close_parts(self) -> None:
        if self._metrics_server is not None:
            await self._metrics_server.stop()
        if self._replica is not None:
            try:
                await self._replica.close()
            except Exception:
                log.exception("could not store the last task changes in JetStream")
        if self._memory_store is not None:
            with contextlib.suppress(Exception):
                await self._memory_store.close()
        if self._store_link is not None:
            with contextlib.suppress(Exception):
                await self._store_link.close()
        if self._queue is not None and self._db is not None and not self._db.closed:
            try:
                self._queue.flush()
            except Exception:
                log.exception("could not write the last task changes to the database")
        if self._bus is not None:
            try:
                await self._bus.close()
            except Exception:
                log.exception("closing the message bus failed")
        if self._llm_provider is not None:
            try:
                await self._llm_provider.aclose()
            except Exception:
                log.exception("closing the LLM provider failed")
        if self._sock is not None and self._server is None:
            self._sock.close()
        try:
            if self._db is not None:
                self._db.close()
        finally:
            if self._db_lock is not None:
                self._db_lock.release()

    async def __aenter__(self) -> HubServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def serve_until(self, stop: asyncio.Event) -> None:
        """Serve until `stop` is set, then stop cleanly."""
        try:
            await stop.wait()
        finally:
            await self.stop()

    # -- background work ----------------------------------------------------------------

    def sweep(self) -> None:
        """End sessions that missed heartbeats and time out overdue tasks, now."""
        self.sessions.expire_stale()
        self.queue.sweep()

    async def _sweep_loop(self) -> None:
        while True:
            delay = 0.5
            deadline = self.queue.next_deadline()
            if deadline is not None:
                delay = min(delay, max(0.01, deadline - self._clock.time()))
            await asyncio.sleep(delay)
            try:
                self.sweep()
            except Exception:
                log.exception("sweeping sessions and deadlines failed")

    async def _flush_loop(self) -> None:
        interval = self.config.flush_interval_seconds
        while True:
            await asyncio.sleep(interval)
            try:
                self.queue.flush()
            except StoreUnavailableError:
                pass  # the store logs when writes start and stop failing; retried next pass
            except Exception:
                log.exception("writing task changes to the database failed")

    # -- access -------------------------------------------------------------------------

    @property
    def is_running(self) -> bool:
        """Whether the Hub serves (started and not stopped)."""
        return self._server is not None and not self._stopped

    @property
    def port(self) -> int:
        """The port the Hub listens on (the real one when configured with 0)."""
        if self._port is None:
            raise RuntimeError("the Hub is not started")
        return self._port

    @property
    def host(self) -> str:
        """The host the Hub is bound to."""
        return self.config.host

    @property
    def address(self) -> str:
        """`host:port`, what an agent's hub_url needs (IPv6 hosts in brackets)."""
        host = self.config.host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"{host}:{self.port}"

    @property
    def metrics(self) -> HubMetrics:
        """This Hub's metrics (its `registry` is what `--metrics-port` serves)."""
        return self._metrics

    @property
    def metrics_port(self) -> int | None:
        """The port serving `/metrics`, or None when metrics are not served."""
        server = self._metrics_server
        return server.port if server is not None else None

    @property
    def db(self) -> Database:
        """The Hub's database."""
        if self._db is None:
            raise RuntimeError("the Hub is not started")
        return self._db

    @property
    def agents(self) -> AgentStore:
        """The enrolled agents (awaited calls; JetStream's with --store jetstream)."""
        if self._agents is None:
            raise RuntimeError("the Hub is not started")
        return self._agents

    @property
    def sessions(self) -> SessionRegistry:
        """The live agent sessions."""
        if self._sessions is None:
            raise RuntimeError("the Hub is not started")
        return self._sessions

    @property
    def queue(self) -> TaskQueue:
        """The task queue."""
        if self._queue is None:
            raise RuntimeError("the Hub is not started")
        return self._queue

    @property
    def agent_service(self) -> AgentService:
        """The AgentService instance."""
        if self._agent_service is None:
            raise RuntimeError("the Hub is not started")
        return self._agent_service

    @property
    def task_service(self) -> TaskService:
        """The TaskService instance."""
        if self._task_service is None:
            raise RuntimeError("the Hub is not started")
        return self._task_service

    @property
    def memory(self) -> MemoryService:
        """The MemoryService (its `snapshot()` reads stored values)."""
        if self._memory is None:
            raise RuntimeError("the Hub is not started")
        return self._memory

    @property
    def bus(self) -> MessageBus:
        """The message bus behind MessagingService (subscribe to it from Python)."""
        if self._bus is None:
            raise RuntimeError("the Hub is not started")
        return self._bus

    @property
    def health(self) -> HealthService:
        """The health service (its statuses)."""
        if self._health is None:
            raise RuntimeError("the Hub is not started")
        return self._health

    @property
    def llm_provider(self) -> LLMProvider | None:
        """The LLM provider answering LLMService calls (its `calls` lists them).

        None before `start()`.
        """
        return self._llm_provider

    @property
    def llm(self) -> LLMService:
        """The LLMService (its `policy` picks models by trust level)."""
        if self._llm is None:
            raise RuntimeError("the Hub is not started")
        return self._llm

    @property
    def tool_registry(self) -> ToolRegistry | None:
        """The tool registry behind ToolService (None before `start()`)."""
        return self._tool_registry

    @property
    def services(self) -> tuple[Servable, ...]:
        """Every servable the Hub serves, in order."""
        return tuple(self._services)
