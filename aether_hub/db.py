"""The Hub's SQLite connection.

Every part of the dev Hub that keeps state (agents, sessions, tasks, memory, tools)
shares one `Database`. It is a file when the Hub runs with `--db FILE`, otherwise an
in-memory database that vanishes with the process. The Hub is single-threaded
(asyncio), so one connection serves every read and most writes; callers group writes in
transactions with `with db.conn: ...`. The one exception: with a file, the task store
commits its groups on a second connection in a thread of its own (`connect_writer`,
aether_hub/taskstore.py), so the event loop is not held while SQLite writes.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

__all__ = ("Database",)


class Database:
    """One SQLite connection for the Hub (file, or in-memory when path is None)."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self._path: Path | None = Path(path) if path is not None else None
        if self._path is not None:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            target = str(self._path)
        else:
            target = ":memory:"
        # check_same_thread=False: the CLI helpers and asyncio.to_thread callers may touch
        # the connection from another thread; the lock below serialises schema setup.
        self._conn = sqlite3.connect(target, check_same_thread=False)
        self._lock = threading.Lock()
        self._closed = False
        self._close_hooks: list[Callable[[], None]] = []
        try:
            if self._path is not None:
                # WAL lets `aether agents list --db FILE` read while the Hub writes.
                self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute("PRAGMA foreign_keys=ON")
            self._conn.execute("PRAGMA busy_timeout=5000")
        except sqlite3.Error:
            self._conn.close()  # e.g. "file is not a database"
            raise

    @property
    def path(self) -> Path | None:
        """The database file, or None for an in-memory database."""
        return self._path

    @property
    def is_persistent(self) -> bool:
        """Whether the state survives the process (a file, not `:memory:`)."""
        return self._path is not None

    @property
    def conn(self) -> sqlite3.Connection:
        """The connection. Autocommit is off: use `with db.conn:` for a transaction."""
        if self._closed:
            raise sqlite3.ProgrammingError("the Hub database is closed")
        return self._conn

    @property
    def closed(self) -> bool:
        """Whether `close()` was called."""
        return self._closed

    def connect_writer(self) -> sqlite3.Connection:
        """A second connection to the database file, for a writer thread (the task store
        commits there so the event loop keeps serving meanwhile; in WAL mode the main
        connection reads each of its commits at once). Same durability settings as the
        main one (its commits also checkpoint the WAL when it passes 1,000 pages, in the
        writer's thread). The caller closes it (see `on_close`)."""
        if self._path is None:
            raise ValueError("an in-memory database has no second connection")
        conn = sqlite3.connect(str(self._path), check_same_thread=False)
        try:
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=5000")
        except sqlite3.Error:
            conn.close()
            raise
        return conn

    def on_close(self, hook: Callable[[], None]) -> None:
        """Call `hook` when `close()` is called, before the connection closes (a writer
        thread finishes its commit and the last changes are written)."""
        self._close_hooks.append(hook)

    def ensure_schema(self, ddl: str) -> None:
        """Run idempotent DDL (`CREATE TABLE IF NOT EXISTS ...`) in one transaction."""
        with self._lock, self.conn:
            self._conn.executescript(ddl)

    def close(self) -> None:
        """Commit what is pending and close the connection; safe to call twice."""
        if self._closed:
            return
        try:
            hooks, self._close_hooks = self._close_hooks, []
            for hook in hooks:
                hook()
        finally:
            self._closed = True
            try:
                self._conn.commit()
            finally:
                self._conn.close()

    def __repr__(self) -> str:
        where = str(self._path) if self._path is not None else ":memory:"
        return f"Database({where!r})"
