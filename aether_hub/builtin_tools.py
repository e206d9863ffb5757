"""The dev Hub's built-in tools.

- ``echo(text)``: returns its input (for trying tools out).
- ``current_time(timezone="UTC")``: the Hub's clock as ISO 8601 and Unix seconds.
- ``add_comment(issue_id, comment)`` / ``list_comments(issue_id)``: comments on issues,
  kept in the Hub's database (table ``issue_comments``), as in the SDK guide's
  ``tools.execute(tool_id="add_comment", input={"issue_id": "123", "comment": "..."})``.
"""

from __future__ import annotations

import datetime
import time
import zoneinfo
from collections.abc import Callable
from typing import Annotated, Final

import pydantic

from aether_hub.db import Database
from aether_hub.tool_registry import ToolContext, ToolRegistry

__all__ = ("Comment", "CurrentTime", "IssueStore", "register_builtins", "registry_with_builtins")

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS issue_comments (
    comment_id  INTEGER PRIMARY KEY AUTOINCREMENT,
    issue_id    TEXT NOT NULL,
    comment     TEXT NOT NULL,
    author      TEXT NOT NULL,
    created_at  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS issue_comments_issue ON issue_comments (issue_id, comment_id);
"""

#: Longest comment the issue store accepts, in characters.
MAX_COMMENT_CHARS: Final = 20_000

IssueId = Annotated[
    str, pydantic.Field(min_length=1, max_length=200, description="The issue's id, e.g. '123'.")
]


class Comment(pydantic.BaseModel):
    """A comment on an issue."""

    comment_id: int
    issue_id: str
    comment: str
    author: str
    created_at: str = pydantic.Field(description="ISO 8601, UTC.")


class CurrentTime(pydantic.BaseModel):
    """A point in time, two ways."""

    iso: str = pydantic.Field(description="ISO 8601 in the requested time zone.")
    unix: float = pydantic.Field(description="Seconds since the Unix epoch.")
    timezone: str


def _iso(epoch: float, tz: datetime.tzinfo = datetime.timezone.utc) -> str:
    return datetime.datetime.fromtimestamp(epoch, tz).isoformat()


class IssueStore:
    """Issue comments in the Hub database."""

    def __init__(self, db: Database, *, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._clock = clock
        db.ensure_schema(_SCHEMA)

    def add(self, issue_id: str, comment: str, author: str) -> Comment:
        """Store a comment; the stored comment."""
        now = self._clock()
        with self._db.conn:
            cursor = self._db.conn.execute(
                "INSERT INTO issue_comments (issue_id, comment, author, created_at)"
                " VALUES (?, ?, ?, ?)",
                (issue_id, comment, author, now),
            )
        return Comment(
            comment_id=int(cursor.lastrowid or 0),
            issue_id=issue_id,
            comment=comment,
            author=author,
            created_at=_iso(now),
        )

    def comments(self, issue_id: str) -> list[Comment]:
        """The comments of an issue, oldest first."""
        rows = self._db.conn.execute(
            "SELECT comment_id, issue_id, comment, author, created_at FROM issue_comments"
            " WHERE issue_id = ? ORDER BY comment_id",
            (issue_id,),
        ).fetchall()
        return [
            Comment(
                comment_id=int(row[0]),
                issue_id=str(row[1]),
                comment=str(row[2]),
                author=str(row[3]),
                created_at=_iso(float(row[4])),
            )
            for row in rows
        ]


def register_builtins(
    registry: ToolRegistry, db: Database, *, clock: Callable[[], float] | None = None
) -> IssueStore:
    """Register the built-in tools in `registry`; the issue store they use."""
    now = clock or time.time
    issues = IssueStore(db, clock=now)

    def echo(text: str) -> str:
        """Return the text unchanged (for trying tools out)."""
        return text

    def current_time(
        timezone: Annotated[
            str, pydantic.Field(description="An IANA time zone such as 'Europe/Berlin'.")
        ] = "UTC",
    ) -> CurrentTime:
        """The Hub's current time."""
        try:
            zone = zoneinfo.ZoneInfo(timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {timezone!r}") from None
        seconds = now()
        return CurrentTime(iso=_iso(seconds, zone), unix=seconds, timezone=timezone)

    def add_comment(
        issue_id: IssueId,
        comment: Annotated[str, pydantic.Field(min_length=1, max_length=MAX_COMMENT_CHARS)],
        ctx: ToolContext,
    ) -> Comment:
        """Add a comment to an issue; the calling agent is its author."""
        return issues.add(issue_id, comment, ctx.agent_id)

    def list_comments(issue_id: IssueId) -> list[Comment]:
        """The comments of an issue, oldest first."""
        return issues.comments(issue_id)

    for fn in (echo, current_time, add_comment, list_comments):
        registry.register(fn)
    return issues


def registry_with_builtins(
    db: Database, *, clock: Callable[[], float] | None = None
) -> ToolRegistry:
    """A registry holding the built-in tools (`echo`, `current_time`, issue comments)."""
    registry = ToolRegistry()
    register_builtins(registry, db, clock=clock)
    return registry
