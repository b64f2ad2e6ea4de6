"""Ownership of a data directory: one appliance process at a time.

The embedded stores cannot be shared between processes, so the process that opens a data
directory holds an exclusive lock on it and advertises its URL there. Admin commands use that
URL to go through the running server, and open the files directly only when no one holds them.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType
from typing import Self

from appliance.errors import ConfigError

LOCK_FILE = "appliance.lock"


class DataDirLock:
    """An exclusive, advisory lock on a data directory, released when the process exits."""

    def __init__(self, data_dir: Path, url: str = "") -> None:
        self._path = data_dir / LOCK_FILE
        self._url = url
        self._fd: int | None = None

    def __enter__(self) -> Self:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            owner = running_server(self._path.parent)
            where = f" (serving at {owner})" if owner else ""
            raise ConfigError(
                f"the data directory {self._path.parent} is in use by another appliance "
                f"process{where}; stop it or choose another --data-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, self._url.encode())
        os.fsync(fd)
        self._fd = fd
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = None


def running_server(data_dir: Path) -> str | None:
    """Return the URL of the process holding ``data_dir``, or ``None`` when no one does.

    Returns an empty string when a process holds it without serving HTTP.
    """
    path = data_dir / LOCK_FILE
    if not path.exists():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return path.read_text(encoding="utf-8").strip()
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
