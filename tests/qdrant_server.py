"""The Qdrant server's stand-in: qdrant-client's in-process mode, behind the server index.

The in-process mode keeps the collection in this process (in a folder, so that it outlives a
close) and answers as the server does; unlike a server it is not safe to call from several
threads at once, which the appliance does, so every call to it takes one lock.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from qdrant_client import QdrantClient

from appliance.backends.indexes.qdrant_server import QdrantServerIndex


class _OneCallAtATime:
    """A client whose calls run one at a time (the in-process mode is not thread-safe)."""

    def __init__(self, client: QdrantClient) -> None:
        self._client = client
        self._lock = threading.Lock()
        self._down = False
        self.calls: list[str] = []
        """The names of the client's methods called, in order."""

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)
        if not callable(method):
            return method

        def locked(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                self.calls.append(name)
                if self._down:
                    raise ConnectionRefusedError(111, "Connection refused")
                return method(*args, **kwargs)

        return locked

    @contextmanager
    def down(self) -> Iterator[None]:
        """Refuse every call meanwhile, as a server that is down refuses connections."""
        self._down = True
        try:
            yield
        finally:
            self._down = False


def stand_in_server(path: Path) -> Any:
    """A client of the stand-in server whose collections live in ``path``."""
    return _OneCallAtATime(QdrantClient(path=str(path)))


def server_index(path: Path, dimension: int, **options: Any) -> QdrantServerIndex:
    """A server index on the collection "items" of a stand-in server in ``path``."""
    return QdrantServerIndex(
        stand_in_server(path),
        "items",
        dimension=dimension,
        location=f"in-process at {path}",
        **options,
    )
