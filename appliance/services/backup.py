"""Backup and restore: the whole appliance as one archive, taken online, restored exactly.

A backup holds the store's tables (items, feedback, users with their preference vectors) from one
snapshot, and the item vectors (each item's vector and its phrases' vectors) of the index for
exactly those item versions. A restore loads both into an empty appliance, so it answers every
request as the original did without embedding the catalog again; the index's search graphs are
the one thing rebuilt.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from appliance import __version__, archive
from appliance.archive import EmbedderIdentity, Manifest
from appliance.backends.indexes.protocol import IndexEntry, Vector, VectorIndex
from appliance.backends.stores.duckdb_store import (
    EXPORTED_TABLES,
    Counts,
    DuckDBStore,
    export_file,
)
from appliance.domain import Item
from appliance.errors import ConflictError, InvalidInputError
from appliance.services.catalog import CatalogService
from appliance.services.encoding import EncoderQueue
from appliance.services.feedback import FeedbackService

log = logging.getLogger(__name__)

ITEMS_FILE = export_file("items")
VECTORS_FILE = "item_vectors.parquet"
#: The manifest's count of each store table.
_COUNTED = {"items": "items", "feedback": "feedback_events", "users": "users"}
#: Items read, and vectors written or loaded, per step.
_PAGE = 1024
#: Items re-embedded on restore to check that the archive's vectors come from this model.
_MODEL_SAMPLE = 8
#: Cosine similarity a re-embedded sample item must reach with its archived vector; the same
#: model on another machine differs in the sixth decimal place, another model by far more.
_SAME_MODEL = 0.999


@dataclass(frozen=True, slots=True)
class BackupArchive:
    """A finished backup, in a private folder that ``discard`` removes."""

    path: Path
    manifest: Manifest

    def discard(self) -> None:
        """Remove the archive and its folder."""
        shutil.rmtree(self.path.parent, ignore_errors=True)


@dataclass(frozen=True, slots=True)
class RestoreSummary:
    """What a restore loaded."""

    counts: Counts
    embedded: int
    """Items embedded again (with ``reembed``); 0 when the archive's vectors were loaded."""
    created_at: datetime
    """When the backup was taken."""


class BackupService:
    """Writes backup archives of the running appliance and restores them into an empty one."""

    def __init__(
        self,
        *,
        store: DuckDBStore,
        index: VectorIndex,
        embedder: EmbedderIdentity,
        encoder: EncoderQueue,
        catalog: CatalogService,
        feedback: FeedbackService,
        on_restored: Sequence[Callable[[], Awaitable[object] | None]],
        scratch: Path,
    ) -> None:
        """Serve backups from ``store`` and ``index``.

        Args:
            store: The system of record.
            index: The vector index derived from it.
            embedder: The model that computes this appliance's vectors.
            encoder: Encodes item texts when the index has no current vector for an item.
            catalog: Re-embeds a restored catalog when restoring with ``reembed``, and learns
                its titles otherwise.
            feedback: Rebuilds preference vectors after a restore with ``reembed``.
            on_restored: Called (and awaited, if they return an awaitable) after a restore, so
                that what was derived from the empty appliance (a popularity ranking, a model
                learnt from feedback, cached answers, logged impressions) is forgotten.
            scratch: A folder of the data directory for archives being written or read; what
                an earlier process left there is removed.

        """
        self._store = store
        self._index = index
        self._embedder = embedder
        self._encoder = encoder
        self._catalog = catalog
        self._feedback = feedback
        self._on_restored = on_restored
        self._scratch = scratch
        # Only this process uses the data directory: anything here is left over from a crash.
        shutil.rmtree(scratch, ignore_errors=True)

    @contextmanager
    def workspace(self) -> Iterator[Path]:
        """Yield a new empty folder next to the data, removed with everything in it on exit."""
        self._scratch.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self._scratch, prefix="work-") as folder:
            yield Path(folder)

    async def ensure_empty(self) -> None:
        """Refuse early, before an archive is received, to restore into a used appliance.

        Raises:
            ConflictError: The appliance holds items, users, feedback or index points.

        """
        await anyio.to_thread.run_sync(self._store.ensure_empty)
        await anyio.to_thread.run_sync(_ensure_empty_index, self._index)

    async def create(self) -> BackupArchive:
        """Write a backup archive while the appliance keeps serving.

        The tables come from one snapshot of the store; the item vectors are read from the
        index and kept only where they were computed from the snapshot's version of the item
        (an item changed since is embedded again as it was), so the archive is consistent
        however many writes run meanwhile.

        Returns:
            The archive, which the caller discards once it has been sent or moved.

        """
        self._scratch.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(dir=self._scratch, prefix="backup-"))
        try:
            exported = await anyio.to_thread.run_sync(self._store.export_tables, folder)
            vectors, reembedded = await self._export_vectors(
                exported.files["items"], folder / VECTORS_FILE
            )
            if reembedded:
                log.info("backup: %d items changed during the backup were embedded", reembedded)
            created_at = datetime.now(UTC)
            members = [
                *(archive.describe(exported.files[t], exported.rows[t]) for t in EXPORTED_TABLES),
                archive.describe(folder / VECTORS_FILE, vectors),
            ]
            manifest = Manifest(
                format=archive.FORMAT,
                format_version=archive.FORMAT_VERSION,
                created_at=created_at,
                appliance_version=__version__,
                schema_version=exported.schema_version,
                embedder=self._embedder,
                counts={
                    **{_COUNTED[t]: exported.rows[t] for t in EXPORTED_TABLES},
                    "item_vectors": vectors,
                },
                last_event_id=exported.last_event_id,
                members=members,
            )
            path = folder / f"appliance-backup-{created_at:%Y%m%dT%H%M%SZ}.tar"
            await anyio.to_thread.run_sync(archive.write, path, manifest, folder)
            for member in members:
                (folder / member.name).unlink()
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return BackupArchive(path, manifest)

    async def _export_vectors(self, items: Path, target: Path) -> tuple[int, int]:
        """Write the vectors of every item in ``items``, in the same order; embed stale ones.

        Each row holds an item's vector and its phrase vectors (``phrases``, a list of rows;
        null where the index keeps none).

        Returns:
            How many vectors were written, and how many of them had to be embedded.

        """
        schema = pa.schema(
            [
                ("item_id", pa.string()),
                ("content_hash", pa.string()),
                ("vector", pa.list_(pa.float32(), self._embedder.dimension)),
                ("phrases", pa.list_(pa.list_(pa.float32(), self._embedder.dimension))),
            ]
        )
        written = embedded = 0
        source = pq.ParquetFile(items)
        with pq.ParquetWriter(target, schema, compression="zstd") as writer:
            for batch in source.iter_batches(
                batch_size=_PAGE, columns=["item_id", "title", "text", "content_hash"]
            ):
                rows = batch.to_pylist()
                ids = [r["item_id"] for r in rows]
                held = await anyio.to_thread.run_sync(self._index.hashed_vectors, ids)
                current = {
                    r["item_id"]: held[r["item_id"]][0]
                    for r in rows
                    if r["item_id"] in held and held[r["item_id"]][1] == r["content_hash"]
                }
                held_phrases = await anyio.to_thread.run_sync(self._index.phrase_vectors, ids)
                phrases = {i: v for i, v in held_phrases.items() if i in current}
                snapshot = [Item(r["item_id"], r["title"], r["text"]) for r in rows]
                encoded, encoded_phrases = await self._catalog.encode(
                    [i for i in snapshot if i.item_id not in current],
                    [i for i in snapshot if i.item_id not in phrases],
                )
                embedded += len(encoded)
                current |= encoded
                phrases |= encoded_phrases
                matrix = np.stack([current[i] for i in ids]).astype(np.float32)
                table = pa.table(
                    {
                        "item_id": ids,
                        "content_hash": [r["content_hash"] for r in rows],
                        "vector": pa.FixedSizeListArray.from_arrays(
                            pa.array(matrix.ravel()), self._embedder.dimension
                        ),
                        "phrases": _phrase_column(
                            [phrases.get(i) for i in ids], self._embedder.dimension
                        ),
                    },
                    schema=schema,
                )
                await anyio.to_thread.run_sync(writer.write_table, table)
                written += len(rows)
        return written, embedded

    async def restore(self, path: Path, *, reembed: bool = False) -> RestoreSummary:
        """Load a backup archive into this appliance, which must be empty.

        Everything is checked before anything is loaded, and the load is one store transaction
        that includes filling the index: on any failure the appliance is left empty.

        Args:
            path: The archive.
            reembed: Embed every item with this appliance's model and rebuild the preference
                vectors from the feedback, instead of loading the archive's vectors; for an
                archive made with another model. Recommendations then differ from the
                original appliance's.

        Returns:
            What was loaded.

        Raises:
            InvalidInputError: The archive is damaged, foreign, of a newer format or schema, or
                its vectors come from another model (without ``reembed``).
            ConflictError: The appliance is not empty.

        """
        await self.ensure_empty()
        with self.workspace() as folder:
            manifest = await anyio.to_thread.run_sync(archive.read, path, folder)
            self._check_compatible(manifest, reembed=reembed)
            try:
                await anyio.to_thread.run_sync(_check_rows, manifest, folder)
                if not reembed:
                    await self._check_model(folder)
            except pa.ArrowException as e:
                raise InvalidInputError(f"the backup's Parquet files cannot be read: {e}") from e
            files = {t: folder / export_file(t) for t in EXPORTED_TABLES}
            loader = _IndexLoader(self._index, folder, reembed=reembed)
            # Shielded: the store's transaction and the index must end together, loaded or not.
            with anyio.CancelScope(shield=True):
                try:
                    counts = await anyio.to_thread.run_sync(
                        self._store.import_tables, files, manifest.last_event_id, loader.load
                    )
                except BaseException:
                    if loader.touched:
                        await anyio.to_thread.run_sync(self._index.clear)
                    raise
        for forget in self._on_restored:
            forgetting = forget()
            if forgetting is not None:
                await forgetting
        # Outside the store's transaction: building the search graphs of a large catalog takes
        # a while, and the data are complete and searchable without them. The archive's vectors
        # are current; an archive written before phrase vectors has its items' phrases encoded.
        embedded = (await self._catalog.reconcile()).embedded
        if reembed:
            await self._feedback.rebuild()
        log.info(
            "restored a backup of %s: %d items, %d users, %d feedback events",
            manifest.created_at.isoformat(),
            counts.items,
            counts.users,
            counts.feedback_events,
        )
        return RestoreSummary(counts=counts, embedded=embedded, created_at=manifest.created_at)

    def _check_compatible(self, manifest: Manifest, *, reembed: bool) -> None:
        schema = self._store.schema_version()
        if manifest.schema_version > schema:
            raise InvalidInputError(
                f"the backup comes from a newer appliance (storage schema "
                f"v{manifest.schema_version}, this one has v{schema}); upgrade this appliance "
                "first"
            )
        made_with, ours = manifest.embedder, self._embedder
        if not reembed and made_with != ours:
            raise InvalidInputError(
                f"the backup's item vectors were computed with the embedding model "
                f"{made_with.name} ({made_with.dimension} dimensions), and this appliance uses "
                f"{ours.name} ({ours.dimension}); configure that model (embedder.model), or "
                "restore with reembed (POST /admin/restore?reembed=true, appliance restore "
                "--reembed) to embed every item with this one"
            )

    async def _check_model(self, folder: Path) -> None:
        """Re-embed a few items and compare: a model of the same name may have other weights."""
        items = pq.ParquetFile(folder / ITEMS_FILE)
        vectors = pq.ParquetFile(folder / VECTORS_FILE)
        if items.metadata.num_rows == 0:
            return
        sample = next(items.iter_batches(batch_size=_MODEL_SAMPLE, columns=["title", "text"]))
        archived = next(vectors.iter_batches(batch_size=_MODEL_SAMPLE, columns=["vector"]))
        texts = [Item("", r["title"], r["text"]).embedding_text for r in sample.to_pylist()]
        fresh = await self._encoder.encode(texts)
        stored = _unit_rows(_vector_matrix(archived.column("vector")))
        agreement = float(np.min(np.sum(_unit_rows(fresh) * stored, axis=1)))
        if agreement < _SAME_MODEL:
            raise InvalidInputError(
                f"the backup's item vectors do not match what this appliance's model "
                f"{self._embedder.name} computes for the same items (cosine similarity "
                f"{agreement:.4f} on a sample, where 1 is expected): the model files differ. "
                "Restore with reembed (POST /admin/restore?reembed=true, appliance restore "
                "--reembed) to embed every item with this model"
            )


class _IndexLoader:
    """Fills the empty index from the archive's vectors, inside the store's import transaction."""

    def __init__(self, index: VectorIndex, folder: Path, *, reembed: bool) -> None:
        self._index = index
        self._folder = folder
        self._reembed = reembed
        self.touched = False
        """Whether anything may have been written to the index (then it is cleared on failure)."""

    def load(self) -> None:
        """Check the index is empty, then load every item's vector (unless re-embedding).

        Raises:
            ConflictError: The index holds points.
            InvalidInputError: The vectors do not line up with the items.

        """
        _ensure_empty_index(self._index)
        if self._reembed:
            return
        self.touched = True
        try:
            items = pq.ParquetFile(self._folder / ITEMS_FILE).iter_batches(
                batch_size=_PAGE,
                columns=["item_id", "title", "text", "content_hash", "seq", "metadata"],
            )
            vectors = pq.ParquetFile(self._folder / VECTORS_FILE).iter_batches(batch_size=_PAGE)
            for item_batch, vector_rows in _aligned(items, vectors):
                self._index.upsert(_entries(item_batch.to_pylist(), vector_rows))
        except pa.ArrowException as e:
            raise InvalidInputError(f"the backup's Parquet files cannot be read: {e}") from e


def _ensure_empty_index(index: VectorIndex) -> None:
    if index.count():
        raise ConflictError(
            "the vector index of this appliance is not empty; restore into an appliance on a "
            "fresh data directory"
        )


def _aligned(
    items: Iterator[pa.RecordBatch], vectors: Iterator[pa.RecordBatch]
) -> Iterator[tuple[pa.RecordBatch, pa.Table]]:
    """Pair each batch of items with the same number of vector rows (batches may differ)."""
    pending: pa.Table | None = None
    for batch in items:
        while pending is None or pending.num_rows < batch.num_rows:
            following = next(vectors, None)
            if following is None:
                raise InvalidInputError("the backup has fewer item vectors than items")
            more = pa.Table.from_batches([following])
            pending = more if pending is None else pa.concat_tables([pending, more])
        yield batch, pending.slice(0, batch.num_rows)
        pending = pending.slice(batch.num_rows)


def _entries(items: list[dict[str, Any]], vectors: pa.Table) -> list[IndexEntry]:
    ids = vectors.column("item_id").to_pylist()
    hashes = vectors.column("content_hash").to_pylist()
    matrix = _vector_matrix(vectors.column("vector"))
    # Archives written before phrase vectors have none, nor those of an index that keeps none.
    phrases: list[Vector | None] = (
        _phrase_matrices(vectors.column("phrases"))
        if "phrases" in vectors.column_names
        else [None] * len(ids)
    )
    entries: list[IndexEntry] = []
    for n, item in enumerate(items):
        if ids[n] != item["item_id"] or hashes[n] != item["content_hash"]:
            raise InvalidInputError(
                f"the backup's vectors do not line up with its items ({ids[n]!r} where "
                f"{item['item_id']!r} is expected); the archive is inconsistent"
            )
        vector: Vector = matrix[n]
        entries.append(
            IndexEntry(
                item_id=item["item_id"],
                vector=vector,
                content_hash=item["content_hash"],
                seq=int(item["seq"]),
                metadata=msgspec.json.decode(item["metadata"]),
                text=Item(item["item_id"], item["title"], item["text"]).embedding_text,
                phrases=phrases[n],
            )
        )
    return entries


def _phrase_column(matrices: Sequence[Vector | None], dimension: int) -> pa.ListArray:
    """Return each item's phrase vectors as one list of fixed-size float lists (or null)."""
    present = [m for m in matrices if m is not None]
    rows = np.concatenate(present).astype(np.float32) if present else np.zeros((0, dimension))
    lengths = [0 if m is None else len(m) for m in matrices]
    offsets = np.concatenate(([0], np.cumsum(lengths))).astype(np.int32)
    return pa.ListArray.from_arrays(
        pa.array(offsets),
        pa.FixedSizeListArray.from_arrays(pa.array(rows.ravel(), pa.float32()), dimension),
        mask=pa.array([m is None for m in matrices]),
    )


def _phrase_matrices(column: pa.ChunkedArray | pa.Array) -> list[Vector | None]:
    """Return a column of lists of phrase vectors as one float32 matrix per row (or None)."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    rows = _vector_matrix(array.flatten())
    offsets = array.offsets.to_numpy()
    offsets = offsets - offsets[0]  # a slice's offsets count from where the slice starts
    missing = array.is_null().to_numpy(zero_copy_only=False)
    return [None if missing[n] else rows[offsets[n] : offsets[n + 1]] for n in range(len(array))]


def _vector_matrix(column: pa.ChunkedArray | pa.Array) -> np.ndarray[Any, np.dtype[np.float32]]:
    """Return a column of fixed-size float lists as a float32 matrix, one row per vector."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    width = array.type.list_size
    flat = array.flatten().to_numpy(zero_copy_only=False)
    return np.asarray(flat, dtype=np.float32).reshape(-1, width)


def _check_rows(manifest: Manifest, folder: Path) -> None:
    """Check that each file holds the rows the manifest counts and the vectors' dimension."""
    for member in manifest.members:
        rows = pq.ParquetFile(folder / member.name).metadata.num_rows
        if rows != member.rows:
            raise InvalidInputError(
                f"{member.name} holds {rows} rows where the manifest says {member.rows}"
            )
    items, vectors = manifest.member(ITEMS_FILE), manifest.member(VECTORS_FILE)
    if vectors.rows != items.rows:
        raise InvalidInputError(
            f"the backup has {vectors.rows} item vectors for {items.rows} items; it is inconsistent"
        )
    vector_type = pq.read_schema(folder / VECTORS_FILE).field("vector").type
    size = getattr(vector_type, "list_size", None)
    if size != manifest.embedder.dimension:
        raise InvalidInputError(
            f"the backup's item vectors have {size} dimensions where its manifest says "
            f"{manifest.embedder.dimension}"
        )


def _unit_rows(matrix: np.ndarray[Any, np.dtype[np.float32]]) -> np.ndarray[Any, Any]:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms == 0.0, 1.0, norms)
