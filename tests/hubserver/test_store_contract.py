"""The store contract: the task-semantics tests of the in-memory Hub, run unchanged against
every other way the Hub keeps its tasks.

The tests are imported from their modules (pytest collects an imported ``test_*`` function
in the importing module, where it then uses this module's fixtures) and run with the
`hub` fixture below, parametrized over the stores:

- ``sqlite``: ``HubConfig(db_path=...)``, a database file in the test's temp dir
  (aether_hub/taskstore.py);
- ``jetstream``: ``HubConfig(store="jetstream", nats_url=...)``, one Hub replica on a real
  nats-server with JetStream in the test's temp dir (aether_hub/taskreplica.py).

The in-memory store is the original modules' own run. Every test of a source module is
either in `CONTRACT` or in `EXCLUDED` with the reason it cannot apply to every store
(`test_every_source_test_is_in_the_contract_or_excluded` checks it), and a test that
fails on one store because of a bug of that store is listed in `KNOWN_BUGS`: strict
xfail for that store only.
"""

from __future__ import annotations

import types
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from aether_hub.server import HubServer
from aether_hub.settings import HubConfig
from aether_hub.testing import TestHub
from tests.hubserver import test_batching, test_hub_tasks, test_inspection
from tests.hubserver.hubkit import FakeClock, running_hub
from tests.hubserver.nats_fixture import NatsServer, nats_jetstream  # noqa: F401  (a fixture)
from tests.hubserver.test_batching import (
    test_a_batch_over_the_limit_is_refused_naming_it,
    test_a_negative_batch_budget_is_refused,
    test_an_agent_that_asks_gets_several_assignments_per_event,
    test_an_agent_that_does_not_ask_gets_one_assignment_per_event,
    test_each_task_of_a_batch_is_acknowledged_or_refused_on_its_own,
    test_idempotency_keys_in_a_batch,
    test_result_batches_are_acknowledged_per_result_in_order,
    test_sdk_agent_runs_batched_assignments_and_stores_every_result,
    test_submit_many_keeps_order_and_reports_each_refusal,
)
from tests.hubserver.test_hub_tasks import (
    test_cancel_pending_and_leased_tasks,
    test_cancelled_stream_keeps_leases_for_an_orderly_shutdown,
    test_concurrency_limit_is_honoured,
    test_duplicate_results_are_acknowledged,
    test_get_task_errors,
    test_heartbeat_frees_the_slot_of_a_cancelled_task,
    test_idempotency_key_returns_the_first_task,
    test_late_result_of_an_expired_lease_is_a_duplicate,
    test_lease_expiry_redelivers_with_next_attempt,
    test_list_tasks_filters_and_pages,
    test_lost_connection_requeues_and_max_attempts_fail_the_task,
    test_priority_then_fifo,
    test_released_task_is_requeued_without_counting_an_attempt,
    test_result_for_a_task_of_another_agent_is_permission_denied,
    test_result_from_a_newer_session_of_the_same_agent_is_accepted,
    test_routing_by_task_type_and_target,
    test_slow_stream_reader_does_not_stall_other_agents,
    test_stream_override_of_max_concurrent_tasks,
    test_submit_dispatch_result_roundtrip,
    test_submit_results_stream,
    test_task_timeout,
    test_unregister_requeues_leases_without_counting_attempts,
    test_watch_task_streams_until_terminal,
)
from tests.hubserver.test_inspection import (
    test_aether_agents_list_shows_the_agents_of_an_in_memory_hub,
    test_list_agents_describes_each_connected_agent,
    test_queue_stats_count_pending_and_running_per_type,
    test_submit_wait_does_not_warn_when_an_agent_serves_the_type,
    test_submit_wait_warns_when_no_connected_agent_serves_the_type,
    test_submit_wait_warns_when_the_target_agent_is_not_connected,
)

STORES = ("sqlite", "jetstream")

# The tests run here against every store (the imports above put them in this module).
CONTRACT: tuple[Callable[..., object], ...] = (
    # tests/hubserver/test_hub_tasks.py: delivery semantics.
    test_submit_dispatch_result_roundtrip,
    test_routing_by_task_type_and_target,
    test_priority_then_fifo,
    test_concurrency_limit_is_honoured,
    test_stream_override_of_max_concurrent_tasks,
    test_lease_expiry_redelivers_with_next_attempt,
    test_lost_connection_requeues_and_max_attempts_fail_the_task,
    test_cancelled_stream_keeps_leases_for_an_orderly_shutdown,
    test_duplicate_results_are_acknowledged,
    test_result_for_a_task_of_another_agent_is_permission_denied,
    test_released_task_is_requeued_without_counting_an_attempt,
    test_unregister_requeues_leases_without_counting_attempts,
    test_cancel_pending_and_leased_tasks,
    test_heartbeat_frees_the_slot_of_a_cancelled_task,
    test_task_timeout,
    test_watch_task_streams_until_terminal,
    test_list_tasks_filters_and_pages,
    test_idempotency_key_returns_the_first_task,
    test_get_task_errors,
    test_submit_results_stream,
    test_slow_stream_reader_does_not_stall_other_agents,
    test_result_from_a_newer_session_of_the_same_agent_is_accepted,
    test_late_result_of_an_expired_lease_is_a_duplicate,
    # tests/hubserver/test_batching.py: SubmitTasks, batched assignments and results.
    test_each_task_of_a_batch_is_acknowledged_or_refused_on_its_own,
    test_idempotency_keys_in_a_batch,
    test_a_batch_over_the_limit_is_refused_naming_it,
    test_an_agent_that_asks_gets_several_assignments_per_event,
    test_an_agent_that_does_not_ask_gets_one_assignment_per_event,
    test_result_batches_are_acknowledged_per_result_in_order,
    test_a_negative_batch_budget_is_refused,
    test_sdk_agent_runs_batched_assignments_and_stores_every_result,
    test_submit_many_keeps_order_and_reports_each_refusal,
    # tests/hubserver/test_inspection.py: ListAgents, GetQueueStats (its `hub` is a
    # TestHub: the fixture below gives one to these tests).
    test_list_agents_describes_each_connected_agent,
    test_queue_stats_count_pending_and_running_per_type,
    test_submit_wait_warns_when_no_connected_agent_serves_the_type,
    test_submit_wait_warns_when_the_target_agent_is_not_connected,
    test_submit_wait_does_not_warn_when_an_agent_serves_the_type,
    test_aether_agents_list_shows_the_agents_of_an_in_memory_hub,
)

# The tests of the source modules that are not in the contract, and why.
_OWN_HUB = "starts its own in-memory Hub (not the `hub` fixture): not about the store"
EXCLUDED: dict[types.ModuleType, dict[str, str]] = {
    test_hub_tasks: {
        "test_oversize_message_is_resource_exhausted": _OWN_HUB + " (the gRPC message size limit)",
    },
    test_batching: {
        "test_roles_apply_to_each_task_of_a_batch": _OWN_HUB + " (client token and roles)",
        "test_a_batch_is_stored_before_it_is_acknowledged": "reads the SQLite table"
        " (`hub.queue.store.fetch`): SQLite internals, on its own --db Hub",
        "test_batches_stop_at_a_cancellation_and_at_the_byte_budget": "a unit test of"
        " `agent_service.take_assignments`: no Hub, no store",
        "test_submit_many_falls_back_to_submit_task_on_an_older_hub": _OWN_HUB
        + " (the SDK's fallback for a Hub without SubmitTasks)",
        "test_submit_many_gives_each_task_the_error_of_a_failed_call": _OWN_HUB
        + " (a refused client token)",
    },
    test_inspection: {
        "test_inspection_needs_the_client_token": _OWN_HUB + " (client token)",
    },
}
# Not in the contract at all, as modules:
# - test_hub_queue_invariants.py and test_hub_task_retention.py build a bare `TaskQueue`
#   themselves (no Hub, so no `hub` fixture; synchronous Hypothesis steps, with no event
#   loop for JetStream's write rounds) and check in-memory internals (`_heaps`,
#   `terminal_held()`, `list_examined`); the retention test with a database opens SQLite
#   itself (`TaskStore(Database(...))`).
# - test_hub_task_store_writes.py and test_hub_task_backlog.py are about SQLite's
#   writes and its pending-task backlog.

# (test name, store) -> why it fails there: a bug of that store (strict xfail).
KNOWN_BUGS: dict[tuple[str, str], str] = {}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run every test that uses `hub` once per store, xfail where a store has a bug."""
    if "store" not in metafunc.fixturenames:
        return
    name = metafunc.function.__name__
    params = []
    for store in STORES:
        reason = KNOWN_BUGS.get((name, store))
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        params.append(pytest.param(store, id=store, marks=marks))
    metafunc.parametrize("store", params, indirect=True)


@pytest.fixture
def store(request: pytest.FixtureRequest) -> str:
    """The store the test runs against (parametrized by `pytest_generate_tests`)."""
    value: str = request.param
    return value


def _config(store: str, request: pytest.FixtureRequest, tmp_path: Path) -> HubConfig:
    if store == "sqlite":
        return HubConfig(port=0, dev=True, db_path=str(tmp_path / "hub.sqlite3"))
    assert store == "jetstream", store
    # Only the JetStream case starts a nats-server.
    nats: NatsServer = request.getfixturevalue("nats_jetstream")
    return HubConfig(port=0, dev=True, store="jetstream", nats_url=nats.url)


@pytest.fixture
async def hub(
    store: str, request: pytest.FixtureRequest, tmp_path: Path, hub_clock: FakeClock
) -> AsyncIterator[HubServer | TestHub]:
    """A dev Hub keeping its tasks in `store`: a `HubServer` driven by `hub_clock` (what
    tests/hubserver/conftest.py's `hub` is, in memory), or for the tests of
    test_inspection.py a `TestHub` (what that module's `hub` is)."""
    config = _config(store, request, tmp_path)
    if request.function.__module__ == test_inspection.__name__:
        async with TestHub(config) as made:
            _check_store(made.server, store)
            yield made
        return
    async with running_hub(config, clock=hub_clock) as server:
        _check_store(server, store)
        yield server


def _check_store(server: HubServer, store: str) -> None:
    """The Hub keeps its tasks where the test says (not silently in memory)."""
    queue = server.queue
    if store == "sqlite":
        assert queue.store is not None and queue.replica is None
    else:
        assert queue.replica is not None and queue.store is None


def test_every_source_test_is_in_the_contract_or_excluded() -> None:
    included = {(f.__module__, f.__name__) for f in CONTRACT}
    for module, excluded in EXCLUDED.items():
        names = {
            name
            for name, value in vars(module).items()
            if name.startswith("test_") and callable(value)
        }
        unknown = names - {n for m, n in included if m == module.__name__} - set(excluded)
        assert not unknown, f"{module.__name__}: neither in the contract nor excluded: {unknown}"
        assert set(excluded) <= names, f"{module.__name__}: excluded tests that do not exist"
    for key in KNOWN_BUGS:
        assert key[0] in {n for _, n in included} and key[1] in STORES, key
