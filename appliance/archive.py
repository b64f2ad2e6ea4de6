"""The backup archive: one uncompressed tar holding ``manifest.json`` and the files it describes.

The manifest comes first and names every other member with its size, row count and sha256, so a
reader can tell a damaged, truncated or foreign file from a good one before using any of it.
Readers ignore manifest fields they do not know; a change that older readers cannot follow
raises ``FORMAT_VERSION``.
"""

from __future__ import annotations

import hashlib
import io
import re
import shutil
import tarfile
from datetime import datetime
from pathlib import Path
from typing import IO

import msgspec

from appliance.errors import InvalidInputError

#: What the manifest's ``format`` says, so that another tool's archive is recognised as foreign.
FORMAT = "recommendation-appliance-backup"
#: The newest archive format this appliance writes and reads.
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
#: The archive's media type over HTTP.
MEDIA_TYPE = "application/x-tar"
#: Members are plain file names: nothing is ever written outside the folder unpacked into.
_MEMBER_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_CHUNK = 1 << 20
#: A manifest is a few kilobytes; anything far larger is not one.
_MAX_MANIFEST_BYTES = 1 << 20


class Member(msgspec.Struct, frozen=True, kw_only=True):
    """One file of the archive."""

    name: str
    rows: int
    bytes: int
    sha256: str


class EmbedderIdentity(msgspec.Struct, frozen=True, kw_only=True):
    """The embedding model the archive's item vectors were computed with."""

    name: str
    dimension: int


class Manifest(msgspec.Struct, frozen=True, kw_only=True):
    """What an archive holds and how it was made."""

    format: str
    format_version: int
    created_at: datetime
    appliance_version: str
    schema_version: int
    """The newest storage migration of the appliance that wrote it."""
    embedder: EmbedderIdentity
    counts: dict[str, int]
    """Items, users, feedback events and item vectors."""
    last_event_id: int
    """The largest feedback event id handed out; a restored appliance continues after it."""
    members: list[Member]

    def member(self, name: str) -> Member:
        """Return the member called ``name``.

        Raises:
            InvalidInputError: The archive has no such member.

        """
        for member in self.members:
            if member.name == name:
                return member
        raise InvalidInputError(f"the backup archive has no {name}; it is incomplete")


def describe(path: Path, rows: int) -> Member:
    """Return the manifest entry of a file about to be archived."""
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(_CHUNK):
            digest.update(chunk)
    return Member(name=path.name, rows=rows, bytes=path.stat().st_size, sha256=digest.hexdigest())


def write(path: Path, manifest: Manifest, folder: Path) -> None:
    """Write the archive: the manifest, then each member from ``folder``, in manifest order."""
    body = msgspec.json.format(msgspec.json.encode(manifest), indent=2)
    mtime = int(manifest.created_at.timestamp())
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(_file_info(MANIFEST, len(body), mtime), io.BytesIO(body))
        for member in manifest.members:
            with (folder / member.name).open("rb") as source:
                tar.addfile(_file_info(member.name, member.bytes, mtime), source)


def read(path: Path, into: Path | None = None) -> Manifest:
    """Check an archive member by member and return its manifest.

    Args:
        path: The archive.
        into: A folder to unpack the members into; ``None`` only checks them.

    Raises:
        InvalidInputError: The file is not a tar archive, not a backup of this appliance, of a
            newer format, truncated, or a member's size or sha256 differs from the manifest.

    """
    try:
        with tarfile.open(path, "r:") as tar:
            manifest = _read_manifest(tar)
            _check_members(tar, manifest, into)
    except tarfile.TarError as e:
        raise InvalidInputError(
            f"the backup archive is damaged or truncated ({e}); take the backup again or use an "
            "intact copy"
        ) from e
    return manifest


def _read_manifest(tar: tarfile.TarFile) -> Manifest:
    first = tar.next()
    if first is None or first.name != MANIFEST or not first.isfile():
        raise InvalidInputError(
            f"this is not a backup of the appliance: a backup archive starts with {MANIFEST}; "
            "send a file that GET /admin/backup (appliance backup) produced"
        )
    if first.size > _MAX_MANIFEST_BYTES:
        raise InvalidInputError(f"the archive's {MANIFEST} is too large to be a backup manifest")
    source = tar.extractfile(first)
    raw = source.read() if source is not None else b""
    try:
        header = msgspec.json.decode(raw, type=dict[str, object])
    except msgspec.DecodeError as e:
        raise InvalidInputError(f"the archive's {MANIFEST} is not valid JSON: {e}") from e
    if header.get("format") != FORMAT:
        raise InvalidInputError(
            f"this is not a backup of the appliance: its {MANIFEST} says format "
            f"{header.get('format')!r}, not {FORMAT!r}"
        )
    version = header.get("format_version")
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise InvalidInputError(
            f"the backup has archive format {version}, newer than the {FORMAT_VERSION} this "
            "appliance reads; restore it into an appliance of the version that made it or newer"
        )
    try:
        manifest = msgspec.json.decode(raw, type=Manifest)
    except msgspec.ValidationError as e:
        raise InvalidInputError(f"the archive's {MANIFEST} is malformed: {e}") from e
    for member in manifest.members:
        if not _MEMBER_NAME.fullmatch(member.name) or member.name == MANIFEST:
            raise InvalidInputError(f"the archive's {MANIFEST} names an invalid member")
    return manifest


def _check_members(tar: tarfile.TarFile, manifest: Manifest, into: Path | None) -> None:
    expected = {m.name: m for m in manifest.members}
    seen: set[str] = set()
    while (info := tar.next()) is not None:
        member = expected.get(info.name)
        if member is None or info.name in seen or not info.isfile():
            raise InvalidInputError(
                f"the backup archive holds {info.name!r}, which its {MANIFEST} does not list "
                "(once, as a file); it was altered after the backup was taken"
            )
        seen.add(info.name)
        source = tar.extractfile(info)
        if source is None or info.size != member.bytes:
            raise InvalidInputError(
                f"{info.name} in the backup archive has {info.size} bytes where its {MANIFEST} "
                f"says {member.bytes}; the archive was altered or damaged"
            )
        digest = _copy(source, None if into is None else into / info.name)
        if digest != member.sha256:
            raise InvalidInputError(
                f"{info.name} in the backup archive does not match the sha256 in its "
                f"{MANIFEST}; the archive was altered or damaged"
            )
    missing = sorted(expected.keys() - seen)
    if missing:
        raise InvalidInputError(
            f"the backup archive lacks {', '.join(missing)}; it is truncated or incomplete"
        )


def _copy(source: IO[bytes], target: Path | None) -> str:
    digest = hashlib.sha256()
    sink = None if target is None else target.open("wb")
    try:
        while chunk := source.read(_CHUNK):
            digest.update(chunk)
            if sink is not None:
                sink.write(chunk)
    finally:
        if sink is not None:
            sink.close()
    return digest.hexdigest()


def _file_info(name: str, size: int, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = mtime
    info.mode = 0o644
    return info


def move(source: Path, target: Path) -> None:
    """Move a finished archive into place; a reader of ``target`` never sees a partial file."""
    partial = target.with_name(f".{target.name}.partial")
    shutil.move(source, partial)
    partial.replace(target)
