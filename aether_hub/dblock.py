"""One Hub per database file: an exclusive lock on a sidecar file next to `--db FILE`.

Two Hubs on the same file would each keep their own queue in memory and overwrite each
other's rows. So a Hub that opens `hub.db` first takes an exclusive `flock` on
`hub.db.lock` (created when missing, never deleted) and writes who it is into it; a second
Hub finds the lock taken and refuses to start with `DatabaseInUseError`, naming the file
and the holder. The operating system drops the lock when the holding process exits, also on
a crash or `kill -9`, so a new Hub can then start on the file at once: the stale text left
in the lock file means nothing.

`flock` locks belong to an open file: a second `HubServer` in the same process is refused
too. The lock is advisory (it keeps out Hubs, not other SQLite users: `aether hub agents
--db FILE` reads and writes beside a running Hub, as WAL allows). On a platform without
`fcntl` (Windows) there is no lock.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import os
import socket
import sys
from pathlib import Path

__all__ = ("DatabaseInUseError", "DatabaseLock", "lock_path")

#: Appended to the database file's name to name its lock file.
LOCK_SUFFIX = ".lock"


class DatabaseInUseError(OSError):
    """Another Hub holds the database file (`aether hub` exits 1 with this message)."""


def lock_path(db_path: str | os.PathLike[str]) -> Path:
    """The lock file of a database file: ``<file>.lock`` beside it."""
    path = Path(db_path)
    return path.with_name(path.name + LOCK_SUFFIX)


class DatabaseLock:
    """The exclusive lock of one Hub database file; `acquire()` it, `release()` when done."""

    def __init__(self, db_path: str | os.PathLike[str]) -> None:
        self._db_path = Path(db_path)
        self._path = lock_path(db_path)
        self._fd: int | None = None

    @property
    def path(self) -> Path:
        """The lock file."""
        return self._path

    @property
    def held(self) -> bool:
        """Whether this object holds the lock now."""
        return self._fd is not None

    def __repr__(self) -> str:
        return f"DatabaseLock({str(self._path)!r}, held={self.held})"

    def acquire(self) -> None:
        """Take the lock, or raise `DatabaseInUseError` naming the file and its holder.

        Raises `OSError` when the lock file cannot be created (e.g. a read-only directory).
        """
        if self._fd is not None:
            return
        if sys.platform == "win32":  # no flock: nothing to hold
            return
        import fcntl

        self._path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise DatabaseInUseError(
                f"the Hub database {self._db_path} is in use by another Hub"
                f" ({_holder(self._path)}; lock file {self._path}). Two Hubs on one"
                " database file would lose each other's work: stop that Hub first, or give"
                " this one another --db file",
            ) from None
        self._fd = fd
        _write_holder(fd)

    def release(self) -> None:
        """Let the lock go (safe to call when not held)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)  # nobody holds it now
        finally:
            os.close(fd)  # closing the file drops the flock


def _write_holder(fd: int) -> None:
    """Best effort: who holds the lock, for the message of the Hub that is refused."""
    started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    text = f"pid {os.getpid()} on {socket.gethostname()}, since {started}\n"
    with contextlib.suppress(OSError):  # e.g. a full disk: the lock itself still holds
        os.ftruncate(fd, 0)
        os.pwrite(fd, text.encode(), 0)


def _holder(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        text = ""
    # One line, bounded: the file is ours, but anyone may have written into it.
    text = " ".join(text.split())[:200]
    return f"held by {text}" if text else "holder unknown"
