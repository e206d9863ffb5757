"""ToolService over a real grpclib server: built-ins, schema validation, plugins, failures."""

from __future__ import annotations

import json
import textwrap
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated

import pydantic
import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from aether._wire import client, pb
from aether_hub.builtin_tools import registry_with_builtins
from aether_hub.db import Database
from aether_hub.sessions import SessionRegistry
from aether_hub.tool_registry import (
    ToolDefinitionError,
    ToolPluginError,
    ToolRegistry,
    ToolService,
    tool,
)
from tests.hubserver.service_harness import ServiceHarness, bearer, serve_services

NOW = 1_700_000_000.0


class Hub:
    def __init__(self, harness: ServiceHarness, service: ToolService) -> None:
        self.harness = harness
        self.service = service
        self.registry = service.registry
        self.stub = client.ToolServiceStub(harness.channel)

    def login(
        self, agent_id: str = "reviewer", trust: pb.TrustLevel = pb.TrustLevel.STANDARD
    ) -> dict[str, str]:
        return self.harness.login(agent_id, trust)

    async def execute(
        self, tool_id: str, arguments: object, auth: dict[str, str] | None = None
    ) -> pb.ExecuteToolResponse:
        raw = arguments if isinstance(arguments, str) else json.dumps(arguments)
        return await self.stub.execute_tool(
            pb.ExecuteToolRequest(tool_id=tool_id, input_json=raw), metadata=auth or self.login()
        )


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[Hub]:
    services: list[ToolService] = []

    def make(db: Database, sessions: SessionRegistry) -> list[ToolService]:
        registry = registry_with_builtins(db, clock=lambda: NOW)
        services.append(ToolService(sessions, registry))
        return services

    async with serve_services(tmp_path, make) as harness:
        yield Hub(harness, services[0])


# -- built-ins --------------------------------------------------------------------------


async def test_list_tools_describes_the_builtins(hub: Hub) -> None:
    listed = await hub.stub.list_tools(pb.ListToolsRequest(), metadata=hub.login())
    ids = [t.tool_id for t in listed.tools]
    assert ids == ["add_comment", "current_time", "echo", "list_comments"]
    by_id = {t.tool_id: t for t in listed.tools}
    add = by_id["add_comment"]
    assert add.description == "Add a comment to an issue; the calling agent is its author."
    schema = json.loads(add.input_schema_json)
    assert schema["type"] == "object"
    assert sorted(schema["required"]) == ["comment", "issue_id"]
    assert set(schema["properties"]) == {"issue_id", "comment"}  # no ToolContext parameter
    assert schema["additionalProperties"] is False
    assert json.loads(by_id["echo"].output_schema_json) == {"type": "string"}
    assert (
        "default" in json.loads(by_id["current_time"].input_schema_json)["properties"]["timezone"]
    )


async def test_the_guides_add_comment_example(hub: Hub) -> None:
    result = await hub.execute(
        "add_comment",
        {"issue_id": "123", "comment": "Review complete"},
        hub.login("dev_py_reviewer"),
    )
    assert result.success, result.error_message
    stored = json.loads(result.result_json)
    assert stored == {
        "comment_id": 1,
        "issue_id": "123",
        "comment": "Review complete",
        "author": "dev_py_reviewer",
        "created_at": "2023-11-14T22:13:20+00:00",
    }
    await hub.execute("add_comment", {"issue_id": "123", "comment": "Second"})
    await hub.execute("add_comment", {"issue_id": "999", "comment": "Elsewhere"})
    listed = await hub.execute("list_comments", {"issue_id": "123"})
    assert [c["comment"] for c in json.loads(listed.result_json)] == ["Review complete", "Second"]
    # The comments are rows of the Hub database.
    rows = hub.harness.db.conn.execute(
        "SELECT issue_id, comment FROM issue_comments ORDER BY comment_id"
    ).fetchall()
    assert rows == [("123", "Review complete"), ("123", "Second"), ("999", "Elsewhere")]


async def test_numbers_are_accepted_as_string_ids(hub: Hub) -> None:
    result = await hub.execute("add_comment", {"issue_id": 123, "comment": "ok"})
    assert result.success
    assert json.loads(result.result_json)["issue_id"] == "123"


async def test_echo_and_current_time(hub: Hub) -> None:
    echoed = await hub.execute("echo", {"text": "hello"})
    assert json.loads(echoed.result_json) == "hello"
    berlin = await hub.execute("current_time", {"timezone": "Europe/Berlin"})
    assert json.loads(berlin.result_json) == {
        "iso": "2023-11-14T23:13:20+01:00",
        "unix": NOW,
        "timezone": "Europe/Berlin",
    }
    utc = await hub.execute("current_time", "")  # empty input means {}
    assert json.loads(utc.result_json)["iso"] == "2023-11-14T22:13:20+00:00"


# -- validation and failures ------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"issue_id": "1"}, "invalid input for tool 'add_comment': comment: Field required"),
        (
            {"issue_id": "1", "comment": ""},
            "invalid input for tool 'add_comment': comment: String should have at least 1",
        ),
        (
            {"issue_id": ["1"], "comment": "x"},
            "invalid input for tool 'add_comment': issue_id: Input should be a valid string",
        ),
        (
            {"issue_id": "1", "comment": "x", "author": "me"},
            "invalid input for tool 'add_comment': author: Extra inputs are not permitted",
        ),
        ("{not json", "input_json: not valid JSON"),
        ("[1, 2]", "input_json: must be a JSON object, not an array"),
        ('"text"', "input_json: must be a JSON object, not a string"),
    ],
)
async def test_invalid_input_is_refused_before_the_tool_runs(
    hub: Hub, arguments: object, message: str
) -> None:
    result = await hub.execute("add_comment", arguments)
    assert not result.success
    assert result.result_json == ""
    assert result.error_message.startswith(message)
    assert hub.harness.db.conn.execute("SELECT count(*) FROM issue_comments").fetchone() == (0,)


async def test_unknown_tool(hub: Hub) -> None:
    result = await hub.execute("summon_dragon", {})
    assert not result.success
    assert result.error_message == (
        "unknown tool 'summon_dragon'; available: add_comment, current_time, echo, list_comments"
    )


async def test_missing_tool_id_is_invalid_argument(hub: Hub) -> None:
    with pytest.raises(GRPCError) as caught:
        await hub.execute("", {})
    assert caught.value.status is Status.INVALID_ARGUMENT
    assert caught.value.message == "tool_id: required"


async def test_unauthenticated(hub: Hub) -> None:
    for metadata in (None, bearer("nope")):
        with pytest.raises(GRPCError) as caught:
            await hub.stub.list_tools(pb.ListToolsRequest(), metadata=metadata)
        assert caught.value.status is Status.UNAUTHENTICATED
        with pytest.raises(GRPCError) as caught:
            await hub.stub.execute_tool(
                pb.ExecuteToolRequest(tool_id="echo", input_json='{"text": "x"}'),
                metadata=metadata,
            )
        assert caught.value.status is Status.UNAUTHENTICATED


async def test_a_raising_tool_is_reported_and_the_hub_keeps_going(hub: Hub) -> None:
    def explode(reason: str) -> str:
        """Always fails."""
        raise RuntimeError(f"kaboom: {reason}")

    hub.registry.register(explode)
    failed = await hub.execute("explode", {"reason": "testing"})
    assert not failed.success
    assert failed.error_message == "tool 'explode' failed: RuntimeError: kaboom: testing"
    assert (await hub.execute("echo", {"text": "still here"})).success
    bad_zone = await hub.execute("current_time", {"timezone": "Mars/Olympus"})
    assert bad_zone.error_message == (
        "tool 'current_time' failed: ValueError: unknown time zone 'Mars/Olympus'"
    )


async def test_a_result_that_is_not_json_is_reported(hub: Hub) -> None:
    def opaque() -> object:
        """Returns something JSON cannot carry."""
        return object()

    hub.registry.register(opaque)
    result = await hub.execute("opaque", {})
    assert not result.success
    assert result.error_message.startswith("tool 'opaque' returned a value that is not JSON")


async def test_a_result_over_the_message_limit_is_reported(hub: Hub) -> None:
    def big(size: int) -> str:
        """A long string."""
        return "x" * size

    hub.registry.register(big)
    hub.service.max_message_bytes = 64 * 1024
    result = await hub.execute("big", {"size": 100 * 1024})
    assert not result.success
    assert result.error_message == "tool 'big' returned more than 64512 bytes of JSON"
    assert (await hub.execute("big", {"size": 1000})).success


async def test_sync_async_and_blocking_tools(hub: Hub) -> None:
    loop_thread = threading.get_ident()

    def where_sync() -> bool:
        """Runs on the event loop."""
        return threading.get_ident() == loop_thread

    async def where_async() -> bool:
        """Runs on the event loop."""
        return threading.get_ident() == loop_thread

    def where_blocking() -> bool:
        """Runs in a worker thread."""
        return threading.get_ident() == loop_thread

    hub.registry.register(where_sync)
    hub.registry.register(where_async)
    hub.registry.register(where_blocking, blocking=True)
    assert (await hub.execute("where_sync", {})).result_json == "true"
    assert (await hub.execute("where_async", {})).result_json == "true"
    assert (await hub.execute("where_blocking", {})).result_json == "false"


class Point(pydantic.BaseModel):
    x: int
    y: int


async def test_model_parameters_and_defaults(hub: Hub) -> None:
    def shift_right(point: Point, by: Annotated[int, pydantic.Field(ge=0)] = 1) -> Point:
        """Move a point right."""
        assert isinstance(point, Point)  # a model, not a dict
        return Point(x=point.x + by, y=point.y)

    hub.registry.register(shift_right)
    moved = await hub.execute("shift_right", {"point": {"x": 1, "y": 2}})
    assert json.loads(moved.result_json) == {"x": 2, "y": 2}
    nested_error = await hub.execute("shift_right", {"point": {"x": 1}, "by": -1})
    assert nested_error.error_message == (
        "invalid input for tool 'shift_right': point.y: Field required;"
        " by: Input should be greater than or equal to 0"
    )


# -- definitions ------------------------------------------------------------------------


def test_definition_errors() -> None:
    registry = ToolRegistry()

    def untyped(x) -> None:  # type: ignore[no-untyped-def]  # the point of the test
        """No hints."""

    def variadic(*args: int) -> None:
        """Varargs."""

    def fine(x: int) -> int:
        """Fine."""
        return x

    with pytest.raises(ToolDefinitionError, match="parameter 'x' needs a type annotation"):
        registry.register(untyped)
    with pytest.raises(ToolDefinitionError, match="parameter 'args' must be a plain named"):
        registry.register(variadic)
    with pytest.raises(ToolDefinitionError, match="invalid tool id 'has space'"):
        registry.register(fine, name="has space")
    registry.register(fine)
    with pytest.raises(ToolDefinitionError, match="a tool named 'fine' is already registered"):
        registry.register(fine)


def test_decorator_keeps_the_function_callable() -> None:
    @tool(name="renamed", description="Custom text.")
    def original(x: int) -> int:
        """Docstring."""
        return x * 2

    @tool
    async def bare(text: str) -> str:
        """Bare decorator.

        Only the first paragraph describes the tool.
        """
        return text

    assert original(4) == 8
    registry = ToolRegistry()
    registered = registry.register(original)
    assert (registered.tool_id, registered.description) == ("renamed", "Custom text.")
    assert registry.register(bare).description == "Bare decorator."


# -- plugins ----------------------------------------------------------------------------

PLUGIN = '''
"""Tools from a plugin module."""

from __future__ import annotations

from aether._wire import pb
from aether_hub.tool_registry import ToolContext, tool


@tool
async def word_count(text: str) -> int:
    """Count the words of a text.

    Words are separated by whitespace.
    """
    return len(text.split())


@tool(name="whoami")
def who_am_i(ctx: ToolContext) -> str:
    """The calling agent."""
    return ctx.agent_id


@tool(min_trust_level=pb.TrustLevel.HIGH)
def launch(target: str) -> str:
    """Only for trusted agents."""
    return f"launched {target}"


def helper() -> None:
    """Not a tool: not decorated."""
'''


@pytest.fixture
def plugin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "plugins"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    return folder


async def test_plugin_module_tools(hub: Hub, plugin_dir: Path) -> None:
    (plugin_dir / "aether_test_plugin_a.py").write_text(textwrap.dedent(PLUGIN))
    added = hub.registry.load_plugin("aether_test_plugin_a")
    assert sorted(added) == ["launch", "whoami", "word_count"]

    standard = hub.login("standard-agent", pb.TrustLevel.STANDARD)
    high = hub.login("high-agent", pb.TrustLevel.HIGH)
    listed = await hub.stub.list_tools(pb.ListToolsRequest(), metadata=standard)
    assert "launch" not in [t.tool_id for t in listed.tools]
    assert "word_count" in [t.tool_id for t in listed.tools]
    listed_high = await hub.stub.list_tools(pb.ListToolsRequest(), metadata=high)
    assert "launch" in [t.tool_id for t in listed_high.tools]
    described = {t.tool_id: t.description for t in listed.tools}
    assert described["word_count"] == "Count the words of a text."

    counted = await hub.execute("word_count", {"text": "one two  three"}, standard)
    assert counted.result_json == "3"
    assert json.loads((await hub.execute("whoami", {}, standard)).result_json) == "standard-agent"
    denied = await hub.execute("launch", {"target": "x"}, standard)
    assert not denied.success
    assert denied.error_message == "tool 'launch' needs trust level high"
    assert (await hub.execute("launch", {"target": "x"}, high)).success


def test_plugin_errors(plugin_dir: Path) -> None:
    registry = ToolRegistry()
    with pytest.raises(ToolPluginError, match="cannot import tools module 'no_such_module_xyz'"):
        registry.load_plugin("no_such_module_xyz")
    (plugin_dir / "aether_test_plugin_empty.py").write_text("def plain() -> None: ...\n")
    with pytest.raises(ToolPluginError, match="defines no tools"):
        registry.load_plugin("aether_test_plugin_empty")
    (plugin_dir / "aether_test_plugin_broken.py").write_text("raise RuntimeError('bad plugin')\n")
    with pytest.raises(ToolPluginError, match="RuntimeError: bad plugin"):
        registry.load_plugin("aether_test_plugin_broken")
    assert len(registry) == 0


def test_plugin_name_clash(plugin_dir: Path) -> None:
    registry = registry_with_builtins(Database())
    (plugin_dir / "aether_test_plugin_clash2.py").write_text(
        "from aether_hub.tool_registry import tool\n\n"
        "@tool(name='echo')\ndef mine(text: str) -> str:\n    return text\n"
    )
    with pytest.raises(ToolPluginError, match="a tool named 'echo' is already registered"):
        registry.load_plugin("aether_test_plugin_clash2")
