"""Admin operations, through the running server when there is one, else on the files directly.

The data directory belongs to one process. When a server holds it, admin commands must go
through its HTTP API; only when none does may a command open the stores itself.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import msgspec
from anyio.from_thread import BlockingPortal, start_blocking_portal

from appliance import archive
from appliance.api import backup as api_backup
from appliance.api import items as api_items
from appliance.api import system as api_system
from appliance.client import ApplianceClient
from appliance.datadir import running_server
from appliance.errors import ConfigError, InvalidInputError
from appliance.schemas.admin import RestoreResult
from appliance.schemas.items import ItemsUpsertRequest, ItemsUpsertResponse
from appliance.schemas.system import ReindexResult
from appliance.schemas.users import RebuildResult
from appliance.security import admin_key
from appliance.services.runtime import Runtime, open_runtime
from appliance.settings import Settings


class AdminTarget(Protocol):
    """What admin commands can do to an appliance."""

    def upsert_items(self, items: Sequence[dict[str, Any]]) -> ItemsUpsertResponse:
        """Add or replace one batch of items given in the wire format."""
        ...

    def reindex(self) -> ReindexResult:
        """Rebuild the vector index from the catalog."""
        ...

    def rebuild_users(self, user_id: str | None = None) -> RebuildResult:
        """Recompute preference vectors from the stored feedback."""
        ...

    def backup(self, target: Path) -> None:
        """Write a backup archive of the appliance to the file ``target``."""
        ...

    def restore(self, source: Path, *, reembed: bool = False) -> RestoreResult:
        """Load a backup archive into the appliance, which must be empty."""
        ...


class LocalAdmin:
    """Admin operations on a runtime opened by this process."""

    def __init__(self, portal: BlockingPortal, runtime: Runtime) -> None:
        self._portal = portal
        self._runtime = runtime

    def upsert_items(self, items: Sequence[dict[str, Any]]) -> ItemsUpsertResponse:
        """Validate and upsert items exactly as POST /items does."""
        try:
            request = msgspec.convert({"items": list(items)}, ItemsUpsertRequest)
        except msgspec.ValidationError as e:
            raise InvalidInputError(f"invalid item: {e}") from e
        return self._portal.call(api_items.upsert_items, self._runtime, request)

    def reindex(self) -> ReindexResult:
        """Rebuild the index in this process."""
        return self._portal.call(api_system.reindex, self._runtime)

    def rebuild_users(self, user_id: str | None = None) -> RebuildResult:
        """Replay feedback in this process."""
        return self._portal.call(api_system.rebuild_users, self._runtime, user_id)

    def backup(self, target: Path) -> None:
        """Write a backup archive in this process and move it to ``target``."""
        made = self._portal.call(self._runtime.backup.create)
        try:
            archive.move(made.path, target)
        finally:
            made.discard()

    def restore(self, source: Path, *, reembed: bool = False) -> RestoreResult:
        """Restore an archive in this process."""
        return self._portal.call(
            functools.partial(api_backup.restore_archive, self._runtime, source, reembed=reembed)
        )


@contextmanager
def admin_target(
    settings: Settings,
    url: str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    key: str | None = None,
) -> Iterator[AdminTarget]:
    """Reach the appliance that owns ``settings.data_dir``.

    Args:
        settings: The configuration (its data directory is looked at).
        url: A server to use; by default the one holding the data directory, if any.
        environ: Where ``APPLIANCE_ADMIN_KEY``, the key sent to a server, is read; defaults to
            ``os.environ``. Without it, the first admin key configured in clear is sent.
        key: The admin key to send to a server, instead of the one ``environ`` gives.

    Yields:
        An HTTP client of the running server, or a runtime opened in this process.

    Raises:
        ConfigError: Another process holds the data directory without serving HTTP.

    """
    target = url or running_server(settings.data_dir)
    if target == "":
        raise ConfigError(
            f"the data directory {settings.data_dir} is held by another process that does not "
            "serve HTTP; wait for it to finish"
        )
    if target is not None:
        if key is None:
            key = admin_key(settings, os.environ if environ is None else environ)
        client = ApplianceClient(target, admin_key=key)
        try:
            yield client
        finally:
            client.close()
        return
    with (
        start_blocking_portal() as portal,
        portal.wrap_async_context_manager(open_runtime(settings)) as runtime,
    ):
        yield LocalAdmin(portal, runtime)
