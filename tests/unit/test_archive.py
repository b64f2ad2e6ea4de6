"""The backup archive format: written with its manifest first, read back member by member, and
every kind of damage or foreignness refused with a message that says what is wrong."""

from __future__ import annotations

import io
import tarfile
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest

from appliance import archive
from appliance.errors import InvalidInputError

CONTENTS = {"items.parquet": b"item rows " * 1000, "users.parquet": b"user rows"}


def manifest_for(folder: Path, **changes: object) -> archive.Manifest:
    for name, data in CONTENTS.items():
        (folder / name).write_bytes(data)
    manifest = archive.Manifest(
        format=archive.FORMAT,
        format_version=archive.FORMAT_VERSION,
        created_at=datetime(2026, 11, 26, 12, 0, tzinfo=UTC),
        appliance_version="0.1.0",
        schema_version=1,
        embedder=archive.EmbedderIdentity(name="all-MiniLM-L6-v2", dimension=384),
        counts={"items": 3},
        last_event_id=7,
        members=[archive.describe(folder / name, rows=3) for name in CONTENTS],
    )
    return msgspec.structs.replace(manifest, **changes)


@pytest.fixture
def written(tmp_path: Path) -> tuple[Path, archive.Manifest]:
    folder = tmp_path / "parts"
    folder.mkdir()
    manifest = manifest_for(folder)
    archive.write(tmp_path / "backup.tar", manifest, folder)
    return tmp_path / "backup.tar", manifest


def tar_of(tmp_path: Path, entries: list[tuple[str, bytes]]) -> Path:
    path = tmp_path / "crafted.tar"
    with tarfile.open(path, "w") as tar:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_an_archive_reads_back_as_written(
    written: tuple[Path, archive.Manifest], tmp_path: Path
) -> None:
    path, manifest = written
    with tarfile.open(path) as tar:
        assert tar.getnames() == [archive.MANIFEST, *CONTENTS]
    into = tmp_path / "unpacked"
    into.mkdir()

    assert archive.read(path, into) == manifest
    assert archive.read(path) == manifest
    for name, data in CONTENTS.items():
        assert (into / name).read_bytes() == data
    assert manifest.member("users.parquet").bytes == len(CONTENTS["users.parquet"])


def test_manifest_fields_a_later_version_adds_are_ignored(tmp_path: Path) -> None:
    folder = tmp_path / "parts"
    folder.mkdir()
    manifest = manifest_for(folder)
    raw = msgspec.json.decode(msgspec.json.encode(manifest))
    raw["compression_hints"] = {"items.parquet": "zstd"}
    path = tar_of(
        tmp_path,
        [(archive.MANIFEST, msgspec.json.encode(raw)), *((n, CONTENTS[n]) for n in CONTENTS)],
    )

    assert archive.read(path) == manifest


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([("notes.txt", b"hello")], "not a backup of the appliance"),
        ([(archive.MANIFEST, b"{not json")], "not valid JSON"),
        ([(archive.MANIFEST, b'{"format": "another-tool"}')], "says format 'another-tool'"),
        (
            [(archive.MANIFEST, b'{"format": "recommendation-appliance-backup"}')],
            "is malformed",
        ),
        (
            [
                (
                    archive.MANIFEST,
                    b'{"format": "recommendation-appliance-backup", "format_version": 99}',
                )
            ],
            "archive format 99, newer than the 1",
        ),
    ],
    ids=["no-manifest", "not-json", "other-format", "incomplete-manifest", "newer-format"],
)
def test_a_foreign_or_newer_archive_is_refused(
    tmp_path: Path, entries: list[tuple[str, bytes]], message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message):
        archive.read(tar_of(tmp_path, entries))


def test_a_file_that_is_no_tar_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "backup.tar"
    path.write_bytes(b"PAR1" + bytes(4000))
    with pytest.raises(InvalidInputError, match="damaged or truncated"):
        archive.read(path)


def test_a_member_name_that_could_leave_the_folder_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "parts"
    folder.mkdir()
    manifest = manifest_for(folder)
    escaping = msgspec.structs.replace(
        manifest,
        members=[msgspec.structs.replace(manifest.members[0], name="../items.parquet")],
    )
    path = tar_of(tmp_path, [(archive.MANIFEST, msgspec.json.encode(escaping))])
    with pytest.raises(InvalidInputError, match="names an invalid member"):
        archive.read(path, tmp_path / "unpacked")
    assert not (tmp_path / "items.parquet").exists()


def test_damaged_members_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "parts"
    folder.mkdir()
    body = msgspec.json.encode(manifest_for(folder))
    items, users = CONTENTS["items.parquet"], CONTENTS["users.parquet"]
    cases = {
        "changed": (
            [("items.parquet", items[:-1] + b"X"), ("users.parquet", users)],
            "does not match the sha256",
        ),
        "shorter": (
            [("items.parquet", items[:-1]), ("users.parquet", users)],
            "has 9999 bytes where its manifest.json says 10000",
        ),
        "missing": ([("items.parquet", items)], "lacks users.parquet"),
        "extra": (
            [("items.parquet", items), ("users.parquet", users), ("run.sh", b"rm -rf /")],
            "holds 'run.sh', which its manifest.json does not list",
        ),
        "repeated": (
            [("items.parquet", items), ("items.parquet", items), ("users.parquet", users)],
            "holds 'items.parquet', which its manifest.json does not list \\(once",
        ),
    }
    for members, message in cases.values():
        path = tar_of(tmp_path, [(archive.MANIFEST, body), *members])
        with pytest.raises(InvalidInputError, match=message):
            archive.read(path)


def test_a_truncated_archive_is_refused(written: tuple[Path, archive.Manifest]) -> None:
    path, _ = written
    whole = path.read_bytes()
    with tarfile.open(path) as tar:
        starts = {m.name: m.offset_data for m in tar.getmembers()}
    # Inside the manifest, inside a member, and between two members.
    cuts = (starts[archive.MANIFEST] + 10, starts["items.parquet"] + 4000, starts["users.parquet"])
    for cut in cuts:
        path.write_bytes(whole[:cut])
        with pytest.raises(InvalidInputError, match="truncated"):
            archive.read(path)
