"""Backup and restore over HTTP: the archive streams out, and streams in to the data directory."""

from __future__ import annotations

from http import HTTPStatus
from pathlib import Path
from typing import Annotated, Any

import anyio
import anyio.to_thread
from litestar import Controller, Request, get, post
from litestar.background_tasks import BackgroundTask
from litestar.di import NamedDependency
from litestar.exceptions import InternalServerException
from litestar.params import Parameter
from litestar.response import File

from appliance import archive
from appliance.api.limits import UNTIMED
from appliance.api.openapi import error_responses
from appliance.errors import InvalidInputError, TooLargeError
from appliance.schemas.admin import RestoreResult
from appliance.services.backup import BackupArchive, RestoreSummary
from appliance.services.runtime import Runtime


async def restore_archive(runtime: Runtime, path: Path, *, reembed: bool) -> RestoreResult:
    """Restore an archive file (POST /admin/restore, ``appliance restore`` without a server)."""
    return _result(await runtime.backup.restore(path, reembed=reembed))


def _result(summary: RestoreSummary) -> RestoreResult:
    return RestoreResult(
        items=summary.counts.items,
        users=summary.counts.users,
        feedback_events=summary.counts.feedback_events,
        backup_created_at=summary.created_at,
        embedded=summary.embedded,
    )


async def _discard(backup: BackupArchive) -> None:
    await anyio.to_thread.run_sync(backup.discard)


async def _receive(request: Request[Any, Any, Any], target: Path, limit: int) -> int:
    """Write the request body to ``target`` as it arrives, up to ``limit`` bytes."""
    too_large = (
        f"the archive is larger than {limit} bytes (server.max_restore_bytes, "
        "APPLIANCE_SERVER__MAX_RESTORE_BYTES); raise that setting to restore it"
    )
    announced = request.headers.get("content-length", "")
    if announced.isdigit() and int(announced) > limit:
        raise TooLargeError(too_large)
    received = 0
    async with await anyio.open_file(target, "wb") as sink:
        try:
            async for chunk in request.stream():
                received += len(chunk)
                if received > limit:
                    raise TooLargeError(too_large)
                await sink.write(chunk)
        except InternalServerException as e:  # Litestar's word for a client that went away
            raise InvalidInputError(
                "the upload ended before the whole archive arrived; send it again"
            ) from e
    return received


class BackupController(Controller):
    """The whole appliance as one archive, and back."""

    path = "/admin"
    tags = ["admin"]

    @get(
        "/backup",
        summary="Download a backup archive",
        opt={UNTIMED: True},
        media_type=archive.MEDIA_TYPE,
    )
    async def backup(self, runtime: NamedDependency[Runtime]) -> File:
        """Stream a tar of the catalog, the feedback, the users and the item vectors.

        Taken while the appliance serves: the data come from one snapshot of the store.
        """
        backup = await runtime.backup.create()
        return File(
            path=backup.path,
            filename=backup.path.name,
            media_type=archive.MEDIA_TYPE,
            background=BackgroundTask(_discard, backup),
        )

    @post(
        "/restore",
        status_code=200,
        summary="Restore a backup archive into this empty appliance",
        opt={UNTIMED: True},
        # The archive is streamed to disk under server.max_restore_bytes instead.
        request_max_body_size=None,
        responses=error_responses(HTTPStatus.CONFLICT, HTTPStatus.REQUEST_ENTITY_TOO_LARGE),
    )
    async def restore(
        self,
        request: Request[Any, Any, Any],
        runtime: NamedDependency[Runtime],
        *,
        reembed: Annotated[
            bool,
            Parameter(
                description="Embed every item with this appliance's model and rebuild the "
                "preferences from the feedback, instead of using the archive's vectors"
            ),
        ] = False,
    ) -> RestoreResult:
        """Load an archive from GET /admin/backup; refused (409) unless the appliance is empty.

        The body is the archive itself. A damaged, truncated or foreign archive is refused
        (400) and leaves the appliance as it was.
        """
        await runtime.backup.ensure_empty()
        with runtime.backup.workspace() as folder:
            upload = folder / "upload.tar"
            if not await _receive(request, upload, runtime.settings.server.max_restore_bytes):
                raise InvalidInputError(
                    "the request has no body; send the archive that GET /admin/backup returned "
                    "(appliance restore FILE)"
                )
            return await restore_archive(runtime, upload, reembed=reembed)
