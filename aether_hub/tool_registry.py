"""Hub-hosted tools (`ToolService`): Python callables with JSON-schema input.

A tool is a plain function, sync or async. Its input schema comes from the type hints of
its parameters (through pydantic, so ``Annotated[str, Field(min_length=1)]`` and models
work), its description from the first paragraph of its docstring, and its output schema
from its return annotation. A parameter annotated :class:`ToolContext` is not part of
the input: the Hub passes the calling agent's identity there.

**Plugins** (``aether hub --tools MODULE``): the module decorates its tools with
:func:`tool`; the Hub imports the module and registers every decorated function it
finds in it::

    # my_tools.py
    from aether_hub.tool_registry import tool

    @tool
    async def word_count(text: str) -> int:
        \"\"\"Count the words of a text.\"\"\"
        return len(text.split())

    @tool(name="shout", blocking=True)   # blocking=True: runs in a worker thread
    def make_loud(text: str) -> str:
        \"\"\"Upper-case a text.\"\"\"
        return text.upper()

Rules of ``ExecuteTool``: the input is validated against the schema before the tool runs.
Everything about one tool call — an unknown tool, input that is not a JSON object or does
not match the schema (the message names the bad field), a tool the agent's trust level
may not use, a tool that raises (the message carries the exception's), a result that is
not JSON — is answered with ``success=false`` and ``error_message``; the Hub keeps
running. Only a request without ``tool_id`` is INVALID_ARGUMENT, and a call without a
live session UNAUTHENTICATED. ``result_json`` is always JSON.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import logging
import re
import typing
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Final, TypeVar, overload

import pydantic
import pydantic_core
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from aether_hub._wire import pb, runtime, server
from aether_hub.auth import trust_level_name
from aether_hub.sessions import SessionRegistry

__all__ = (
    "Tool",
    "ToolContext",
    "ToolDefinitionError",
    "ToolOutcome",
    "ToolPluginError",
    "ToolRegistry",
    "ToolService",
    "tool",
)

_log = logging.getLogger(__name__)

_F = TypeVar("_F", bound=Callable[..., object])

_MARK: Final = "__aether_tool__"
_TOOL_ID: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,63}$")
_TRUST_ORDER: Final = {
    pb.TrustLevel.UNSPECIFIED: 1,
    pb.TrustLevel.LOW: 1,
    pb.TrustLevel.STANDARD: 2,
    pb.TrustLevel.HIGH: 3,
}


class ToolDefinitionError(ValueError):
    """A function cannot be a tool (missing type hints, bad name, duplicate id...)."""


class ToolPluginError(ValueError):
    """A ``--tools`` module could not be loaded; the message says which and why."""


@dataclass(frozen=True, slots=True)
class ToolContext:
    """Who called a tool. Declare a parameter of this type to receive it."""

    agent_id: str
    session_id: str
    trust_level: pb.TrustLevel


@dataclass(frozen=True, slots=True)
class ToolOutcome:
    """The result of one tool call."""

    success: bool
    result_json: str = ""
    error_message: str = ""


@dataclass(frozen=True, slots=True)
class _ToolSpec:
    name: str | None
    description: str | None
    blocking: bool
    min_trust_level: pb.TrustLevel


@overload
def tool(fn: _F, /) -> _F: ...


@overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    blocking: bool = False,
    min_trust_level: pb.TrustLevel = pb.TrustLevel.LOW,
) -> Callable[[_F], _F]: ...


def tool(
    fn: _F | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    blocking: bool = False,
    min_trust_level: pb.TrustLevel = pb.TrustLevel.LOW,
) -> _F | Callable[[_F], _F]:
    """Mark a function as a Hub tool (for ``--tools`` plugin modules).

    `name` defaults to the function's name, `description` to its docstring's first
    paragraph. A sync tool runs on the Hub's event loop unless `blocking` asks for a
    worker thread. Agents below `min_trust_level` neither see nor run it. The function
    is returned unchanged, so it stays callable.
    """
    spec = _ToolSpec(name, description, blocking, min_trust_level)

    def mark(function: _F) -> _F:
        if not callable(function):
            raise ToolDefinitionError(f"@tool needs a function, not {function!r}")
        setattr(function, _MARK, spec)
        return function

    return mark(fn) if fn is not None else mark


def _describe(fn: Callable[..., object]) -> str:
    doc = inspect.getdoc(fn) or ""
    return doc.split("\n\n", 1)[0].replace("\n", " ").strip()


def _validation_message(exc: pydantic.ValidationError) -> str:
    problems = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(part) for part in error["loc"]) or "input"
        problems.append(f"{where}: {error['msg']}")
    return "; ".join(problems)


def _json_kind(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "null"


class Tool:
    """A registered tool: its schema, and how to run it."""

    def __init__(
        self,
        fn: Callable[..., object],
        *,
        name: str | None = None,
        description: str | None = None,
        blocking: bool = False,
        min_trust_level: pb.TrustLevel = pb.TrustLevel.LOW,
    ) -> None:
        tool_id: str = name or str(getattr(fn, "__name__", ""))
        if not _TOOL_ID.match(tool_id):
            raise ToolDefinitionError(
                f"invalid tool id {tool_id!r}: use letters, digits, '_', '.', '-' (at most 64),"
                " starting with a letter or '_'"
            )
        self.tool_id = tool_id
        self.description = description if description is not None else _describe(fn)
        self.min_trust_level = min_trust_level
        self._fn = fn
        self._blocking = blocking
        self._is_async = inspect.iscoroutinefunction(fn)
        try:
            hints = typing.get_type_hints(fn, include_extras=True)
            signature = inspect.signature(fn)
        except (NameError, TypeError, ValueError) as exc:
            raise ToolDefinitionError(
                f"tool {tool_id!r}: cannot read its signature: {exc}"
            ) from None
        fields: dict[str, tuple[object, object]] = {}
        self._context_param: str | None = None
        for param in signature.parameters.values():
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD, param.POSITIONAL_ONLY):
                raise ToolDefinitionError(
                    f"tool {tool_id!r}: parameter {param.name!r} must be a plain named parameter"
                )
            if param.name not in hints:
                raise ToolDefinitionError(
                    f"tool {tool_id!r}: parameter {param.name!r} needs a type annotation"
                )
            annotation = hints[param.name]
            if annotation is ToolContext:
                self._context_param = param.name
                continue
            default = ... if param.default is param.empty else param.default
            fields[param.name] = (annotation, default)
        try:
            self._input_model: type[pydantic.BaseModel] = pydantic.create_model(  # type: ignore[call-overload]  # field definitions are built dynamically
                f"{tool_id}_input",
                # Agents often send ids as numbers: accept 123 for a str parameter.
                __config__=pydantic.ConfigDict(extra="forbid", coerce_numbers_to_str=True),
                **fields,
            )
            self.input_schema: dict[str, object] = self._input_model.model_json_schema()
        except (pydantic.PydanticSchemaGenerationError, pydantic.PydanticUserError) as exc:
            raise ToolDefinitionError(
                f"tool {tool_id!r}: unusable parameter types: {exc}"
            ) from None
        self.output_schema: dict[str, object] | None = None
        returns = hints.get("return", inspect.Signature.empty)
        if returns not in (inspect.Signature.empty, typing.Any, None, type(None)):
            try:
                self.output_schema = pydantic.TypeAdapter(returns).json_schema()
            except (pydantic.PydanticSchemaGenerationError, pydantic.PydanticUserError):
                self.output_schema = None  # results are still JSON-encoded as they come

    def __repr__(self) -> str:
        return f"Tool({self.tool_id!r})"

    @property
    def function(self) -> Callable[..., object]:
        """The registered callable."""
        return self._fn

    def info(self) -> pb.ToolInfo:
        """The tool as ListTools describes it."""
        return pb.ToolInfo(
            tool_id=self.tool_id,
            description=self.description,
            input_schema_json=json.dumps(self.input_schema),
            output_schema_json=json.dumps(self.output_schema) if self.output_schema else "",
        )

    def allows(self, trust_level: pb.TrustLevel) -> bool:
        """Whether an agent of `trust_level` may use this tool."""
        return _TRUST_ORDER.get(trust_level, 1) >= _TRUST_ORDER.get(self.min_trust_level, 1)

    async def run(self, arguments: Mapping[str, object], context: ToolContext) -> ToolOutcome:
        """Validate `arguments` against the schema, then call the function."""
        try:
            validated = self._input_model.model_validate(dict(arguments))
        except pydantic.ValidationError as exc:
            return ToolOutcome(
                False,
                error_message=(
                    f"invalid input for tool {self.tool_id!r}: {_validation_message(exc)}"
                ),
            )
        # Keep nested models as models: build kwargs from attributes, not model_dump().
        kwargs: dict[str, object] = {
            name: getattr(validated, name) for name in type(validated).model_fields
        }
        if self._context_param is not None:
            kwargs[self._context_param] = context
        try:
            if self._is_async:
                result = await typing.cast(Callable[..., Awaitable[object]], self._fn)(**kwargs)
            elif self._blocking:
                result = await asyncio.to_thread(self._fn, **kwargs)
            else:
                result = self._fn(**kwargs)
                if inspect.isawaitable(result):
                    result = await result
        except Exception as exc:
            _log.warning("tool %r raised %s", self.tool_id, type(exc).__name__, exc_info=True)
            return ToolOutcome(
                False, error_message=f"tool {self.tool_id!r} failed: {type(exc).__name__}: {exc}"
            )
        try:
            encoded = pydantic_core.to_json(result).decode("utf-8")
        except (pydantic_core.PydanticSerializationError, TypeError, ValueError) as exc:
            return ToolOutcome(
                False,
                error_message=f"tool {self.tool_id!r} returned a value that is not JSON: {exc}",
            )
        return ToolOutcome(True, result_json=encoded)


class ToolRegistry:
    """The Hub's tools by id."""

    def __init__(self) -> None:
        self._tools: dict[str, Tool] = {}

    def __contains__(self, tool_id: object) -> bool:
        return tool_id in self._tools

    def __len__(self) -> int:
        return len(self._tools)

    def __repr__(self) -> str:
        return f"ToolRegistry({sorted(self._tools)})"

    def get(self, tool_id: str) -> Tool | None:
        """The tool `tool_id`, or None."""
        return self._tools.get(tool_id)

    def tools(self, trust_level: pb.TrustLevel | None = None) -> list[Tool]:
        """The tools (those `trust_level` may use, when given), sorted by id."""
        return [
            t
            for _, t in sorted(self._tools.items())
            if trust_level is None or t.allows(trust_level)
        ]

    def register(
        self,
        fn: Callable[..., object],
        *,
        name: str | None = None,
        description: str | None = None,
        blocking: bool = False,
        min_trust_level: pb.TrustLevel = pb.TrustLevel.LOW,
    ) -> Tool:
        """Add `fn` as a tool; ToolDefinitionError when it cannot be one or the id is taken."""
        spec = getattr(fn, _MARK, None)
        if isinstance(spec, _ToolSpec):
            name = name or spec.name
            description = description if description is not None else spec.description
            blocking = blocking or spec.blocking
            min_trust_level = max(
                min_trust_level, spec.min_trust_level, key=lambda t: _TRUST_ORDER.get(t, 1)
            )
        new = Tool(
            fn,
            name=name,
            description=description,
            blocking=blocking,
            min_trust_level=min_trust_level,
        )
        if new.tool_id in self._tools:
            raise ToolDefinitionError(f"a tool named {new.tool_id!r} is already registered")
        self._tools[new.tool_id] = new
        return new

    def load_plugin(self, module: str) -> list[str]:
        """Import `module` and register its @tool functions; the new tool ids."""
        try:
            loaded = importlib.import_module(module)
        except Exception as exc:
            raise ToolPluginError(
                f"cannot import tools module {module!r}: {type(exc).__name__}: {exc}"
            ) from exc
        registered_functions = {id(t.function) for t in self._tools.values()}
        added: list[str] = []
        for value in list(vars(loaded).values()):
            if not isinstance(getattr(value, _MARK, None), _ToolSpec):
                continue
            if id(value) in registered_functions:
                continue  # imported from a module loaded earlier
            try:
                added.append(self.register(value).tool_id)
            except ToolDefinitionError as exc:
                raise ToolPluginError(f"tools module {module!r}: {exc}") from None
            registered_functions.add(id(value))
        if not added:
            raise ToolPluginError(
                f"tools module {module!r} defines no tools: decorate functions with"
                " @aether_hub.tool_registry.tool"
            )
        _log.info("loaded tools %s from %s", ", ".join(added), module)
        return added

    async def execute(
        self, tool_id: str, input_json: str, context: ToolContext | None = None
    ) -> ToolOutcome:
        """Run `tool_id` on a JSON-object input; every failure is an unsuccessful outcome."""
        context = context or ToolContext("", "", pb.TrustLevel.HIGH)
        found = self._tools.get(tool_id)
        if found is None:
            known = ", ".join(t.tool_id for t in self.tools(context.trust_level)) or "none"
            return ToolOutcome(False, error_message=f"unknown tool {tool_id!r}; available: {known}")
        if not found.allows(context.trust_level):
            return ToolOutcome(
                False,
                error_message=f"tool {tool_id!r} needs trust level"
                f" {trust_level_name(found.min_trust_level)}",
            )
        try:
            arguments = json.loads(input_json) if input_json.strip() else {}
        except (ValueError, RecursionError) as exc:
            return ToolOutcome(False, error_message=f"input_json: not valid JSON ({exc})")
        if not isinstance(arguments, dict):
            return ToolOutcome(
                False,
                error_message=f"input_json: must be a JSON object, not {_json_kind(arguments)}",
            )
        return await found.run(arguments, context)


class ToolService(server.ToolServiceBase):
    """`aether.v1.ToolService` over a :class:`ToolRegistry`."""

    def __init__(self, sessions: SessionRegistry, registry: ToolRegistry) -> None:
        self._sessions = sessions
        self.registry = registry

    async def list_tools(
        self, request: pb.ListToolsRequest, context: runtime.ServerContext
    ) -> pb.ListToolsResponse:
        """The tools the calling agent may use, sorted by id."""
        session = self._sessions.require(context)
        return pb.ListToolsResponse(
            tools=[t.info() for t in self.registry.tools(session.trust_level)]
        )

    async def execute_tool(
        self, request: pb.ExecuteToolRequest, context: runtime.ServerContext
    ) -> pb.ExecuteToolResponse:
        """Validate the input against the tool's schema, then run the tool."""
        session = self._sessions.require(context)
        if not request.tool_id:
            raise GRPCError(Status.INVALID_ARGUMENT, "tool_id: required")
        outcome = await self.registry.execute(
            request.tool_id,
            request.input_json,
            ToolContext(session.agent_id, session.session_id, session.trust_level),
        )
        # Leave room for the envelope under the message-size guard.
        limit = self.max_message_bytes - 1024
        if outcome.success and len(outcome.result_json.encode("utf-8")) > limit:
            outcome = ToolOutcome(
                False,
                error_message=f"tool {request.tool_id!r} returned more than {limit} bytes of JSON",
            )
        return pb.ExecuteToolResponse(
            success=outcome.success,
            result_json=outcome.result_json,
            error_message=outcome.error_message,
        )
