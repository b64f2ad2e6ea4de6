"""The catalog: items in the store, their vectors in the index, kept in agreement."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio.to_thread

from appliance.backends.indexes.protocol import IndexEntry, Vector, VectorIndex
from appliance.backends.stores.duckdb_store import DuckDBStore, StoredItem
from appliance.domain import Item
from appliance.errors import ApplianceError, InvalidInputError, NotFoundError
from appliance.ingest_files import batches, read_items
from appliance.services.encoding import EncoderQueue
from appliance.services.titles import TitleDictionary

log = logging.getLogger(__name__)

#: Seconds of quiet after the last catalog write before the index rebuilds its search graphs,
#: so that a bulk import of many batches builds them once rather than after every batch.
OPTIMIZE_DELAY = 2.0
_RECONCILE_BATCH = 512


@dataclass(frozen=True, slots=True)
class UpsertSummary:
    """What one batch upsert did."""

    created: int
    updated: int
    unchanged: int
    embedded: int

    def __add__(self, other: UpsertSummary) -> UpsertSummary:
        return UpsertSummary(
            self.created + other.created,
            self.updated + other.updated,
            self.unchanged + other.unchanged,
            self.embedded + other.embedded,
        )


@dataclass(frozen=True, slots=True)
class ReconcileSummary:
    """What bringing the index in line with the store did."""

    embedded: int
    removed: int
    failed: int = 0
    """Items the index refused; they stay in the store and are retried at the next start."""
    rewritten: int = 0
    """Items written again with their stored vectors, to bring their entries up to date."""


class CatalogService:
    """Adds, replaces, reads and deletes items; the store is the system of record.

    The index and the dictionary of titles are derived from it and follow every change.
    """

    def __init__(
        self,
        store: DuckDBStore,
        index: VectorIndex,
        encoder: EncoderQueue,
        titles: TitleDictionary | None = None,
        *,
        on_change: Callable[[], None] = lambda: None,
        on_delete: Callable[[], None] = lambda: None,
    ) -> None:
        self._store = store
        self._index = index
        self._encoder = encoder
        self.titles = titles if titles is not None else TitleDictionary()
        """The titles of the catalog's items, for finding them named in a request."""
        # Called on the event loop after any item was written or deleted (cached answers go).
        self._on_change = on_change
        # Told after items leave the catalog (derived models rebuild without them then).
        self._on_delete = on_delete
        self._optimizer: asyncio.TimerHandle | None = None
        self._optimizing: asyncio.Task[None] | None = None
        # Upserts under way, and whether the index took writes it has not optimized yet.
        self._writing = 0
        self._unoptimized = False
        # Items whose index entry may differ from the store: a write to the index failed after
        # the store's (a Qdrant server out of reach). Each write first tries to mend them.
        self._astray: set[str] = set()

    async def upsert(self, items: Sequence[Item]) -> UpsertSummary:
        """Insert or replace items; only items whose title or text changed are re-embedded.

        Args:
            items: The items, each id at most once.

        Returns:
            Counts of created, updated, unchanged and embedded items.

        Raises:
            InvalidInputError: An item id appears more than once.
            BackendError: The index refused a write (a Qdrant server out of reach). The store
                has the items: the next write (this one sent again, say) writes them to the
                index first.

        """
        ids = [i.item_id for i in items]
        repeated = [i for i, n in Counter(ids).items() if n > 1]
        if repeated:
            raise InvalidInputError(
                f"item_id {repeated[0]!r} appears more than once in the batch; send each item once"
            )
        self._write_started()
        try:
            return await self._upsert(items, ids)
        finally:
            self._write_finished()

    async def _upsert(self, items: Sequence[Item], ids: Sequence[str]) -> UpsertSummary:
        await self._mend()
        existing = await anyio.to_thread.run_sync(self._store.get_items, ids)
        changed = [i for i in items if i.item_id not in existing or existing[i.item_id].item != i]
        if not changed:
            return UpsertSummary(0, 0, len(items), 0)
        to_embed = [
            i
            for i in changed
            if i.item_id not in existing or existing[i.item_id].content_hash != i.content_hash
        ]
        vectors, phrases = await self._vectors_for(changed, to_embed)
        try:
            stored = await anyio.to_thread.run_sync(self._store.put_items, changed)
            self._unoptimized = True
            try:
                entries = _entries(stored, vectors, phrases)
                await anyio.to_thread.run_sync(self._index.upsert, entries)
            except ApplianceError:
                self._astray.update(i.item_id for i in changed)
                raise
            await anyio.to_thread.run_sync(
                self.titles.update, [(i.item_id, i.title, i.text) for i in changed]
            )
        finally:
            self._on_change()
        created = sum(1 for i in changed if i.item_id not in existing)
        return UpsertSummary(
            created=created,
            updated=len(changed) - created,
            unchanged=len(items) - len(changed),
            embedded=len(to_embed),
        )

    async def _vectors_for(
        self, changed: Sequence[Item], to_embed: Sequence[Item]
    ) -> tuple[dict[str, Vector], dict[str, Vector]]:
        """Return the vectors and the phrase vectors of ``changed``, encoding what is new."""
        # Items whose metadata alone changed keep their vectors, read back from the index.
        embedding = {i.item_id for i in to_embed}
        reuse = [i.item_id for i in changed if i.item_id not in embedding]
        vectors = await anyio.to_thread.run_sync(self._index.vectors, reuse)
        phrases = await anyio.to_thread.run_sync(self._index.phrase_vectors, reuse)
        encoded, encoded_phrases = await self.encode(
            [i for i in changed if i.item_id not in vectors],
            [i for i in changed if i.item_id not in phrases],
        )
        return vectors | encoded, phrases | encoded_phrases

    async def encode(
        self, whole: Sequence[Item], phrased: Sequence[Item]
    ) -> tuple[dict[str, Vector], dict[str, Vector]]:
        """Encode the whole texts of ``whole`` and the phrases of ``phrased``, in one request.

        Phrases recur across items (a category, a year, a keyword): each is encoded once (see
        ``texts_to_encode``).

        Returns:
            Each item's vector, and each item's phrase vectors (a row per phrase).

        """
        if not self._index.phrases:
            phrased = []
        texts = texts_to_encode(whole, phrased)
        encoded = await self._encoder.encode(texts)
        row = {text: n for n, text in enumerate(texts[len(whole) :], start=len(whole))}
        return (
            {i.item_id: encoded[n] for n, i in enumerate(whole)},
            {i.item_id: encoded[[row[p] for p in i.phrases]] for i in phrased},
        )

    async def load_file(self, path: Path, batch_size: int = 256) -> UpsertSummary:
        """Upsert every valid item of a catalog file in the wire format; invalid lines are logged.

        Returns:
            The summed counts over all batches.

        """
        totals = UpsertSummary(0, 0, 0, 0)
        for batch in batches(read_items(path), batch_size):
            for rejected in batch.rejected:
                log.warning("%s line %d skipped: %s", path.name, rejected.line, rejected.reason)
            if batch.items:
                totals = totals + await self.upsert([Item(**item) for item in batch.items])
            log.info(
                "%s: %d items loaded",
                path.name,
                totals.created + totals.updated + totals.unchanged,
            )
        return totals

    async def get(self, item_id: str) -> Item:
        """Return one item.

        Raises:
            NotFoundError: No item has this id.

        """
        found = await anyio.to_thread.run_sync(self._store.get_items, [item_id])
        if item_id not in found:
            raise NotFoundError(f"item {item_id!r} is not in the catalog")
        return found[item_id].item

    async def get_many(self, item_ids: Sequence[str]) -> dict[str, Item]:
        """Return the items of the given ids that exist."""
        found = await anyio.to_thread.run_sync(self._store.get_items, item_ids)
        return {k: v.item for k, v in found.items()}

    async def page(
        self, after: str | None, limit: int, query: str | None = None
    ) -> tuple[list[Item], str | None]:
        """Return a page of items in id order and the cursor of the next page (or ``None``).

        Args:
            after: The cursor of the previous page, or ``None`` for the first.
            limit: Most items on the page.
            query: Only items whose title or text contains this, ignoring case.

        """
        rows = await anyio.to_thread.run_sync(self._store.list_items, after, limit + 1, query)
        items = [r.item for r in rows[:limit]]
        return items, (items[-1].item_id if len(rows) > limit else None)

    async def delete(self, item_id: str) -> None:
        """Delete one item from the catalog; feedback that mentions it is kept.

        Raises:
            NotFoundError: No item has this id.

        """
        await self._mend()
        deleted = await anyio.to_thread.run_sync(self._store.delete_items, [item_id])
        if not deleted:
            raise NotFoundError(f"item {item_id!r} is not in the catalog")
        try:
            await anyio.to_thread.run_sync(self._index.delete, deleted)
        except ApplianceError:
            self._astray.update(deleted)
            raise
        finally:
            # The store no longer holds it, whatever the index did.
            self.titles.remove(deleted)
            self._on_change()
            self._on_delete()

    async def reconcile(self) -> ReconcileSummary:
        """Make the index and the dictionary of titles agree with the store.

        The index embeds what is missing or stale, drops orphans and rewrites outdated entries
        with their stored vectors; the dictionary of titles is rebuilt. Runs at start-up, so a
        crash between a store write and the index write loses nothing, and an index written by
        an older version gains what this one keeps (keyword and phrase vectors) before the
        appliance serves.
        """
        await self.reload_titles()
        # Everything is compared below: what earlier writes left astray included.
        self._astray.clear()
        wanted = await anyio.to_thread.run_sync(self._store.content_hashes)
        present = await anyio.to_thread.run_sync(self._index.fingerprints)
        orphans = [i for i in present if i not in wanted]
        stale = [i for i, h in wanted.items() if present.get(i) != h]
        if orphans:
            await anyio.to_thread.run_sync(self._index.delete, orphans)
        stale_ids = set(stale)
        outdated = [
            i
            for i in await anyio.to_thread.run_sync(self._index.outdated)
            if i in wanted and i not in stale_ids
        ]
        rewritten, failed = await self._rewrite(outdated)
        for start in range(0, len(stale), _RECONCILE_BATCH):
            ids = stale[start : start + _RECONCILE_BATCH]
            try:
                await self._index_as_stored(ids)
            except ApplianceError as e:
                # One bad batch must not keep the appliance from starting; the first write
                # tries them again.
                log.exception("index reconcile: %d items not indexed: %s", len(ids), e.message)
                failed += len(ids)
                self._astray.update(ids)
            log.info(
                "index: %d of %d items embedded",
                min(start + _RECONCILE_BATCH, len(stale)),
                len(stale),
            )
        if stale or orphans or rewritten:
            self._on_change()
        # Also when nothing changed: an optimize killed with the process left its graphs
        # unbuilt, and the index has nothing to do (and returns at once) otherwise.
        await anyio.to_thread.run_sync(self._index.optimize)
        return ReconcileSummary(
            embedded=len(stale) - failed, removed=len(orphans), failed=failed, rewritten=rewritten
        )

    async def _index_as_stored(self, item_ids: Sequence[str]) -> tuple[list[Item], list[str]]:
        """Write the items to the index as the store holds them, embedded afresh.

        Returns:
            The items written, and the ids the store does not hold, deleted from the index.

        """
        found = await anyio.to_thread.run_sync(self._store.get_items, item_ids)
        gone = [i for i in item_ids if i not in found]
        if gone:
            await anyio.to_thread.run_sync(self._index.delete, gone)
        rows = list(found.values())
        items = [r.item for r in rows]
        vectors, phrases = await self.encode(items, items)
        await anyio.to_thread.run_sync(self._index.upsert, _entries(rows, vectors, phrases))
        return items, gone

    async def _mend(self) -> None:
        """Bring the index in line with the store for the items a failed index write left.

        An index that still fails leaves them for the next write, and the write goes on: an
        item the index refused for good must not stop every other.
        """
        if not self._astray:
            return
        astray = sorted(self._astray)
        self._unoptimized = True
        try:
            # Before encoding anything: a server still down fails this at once.
            await anyio.to_thread.run_sync(self._index.check)
            for start in range(0, len(astray), _RECONCILE_BATCH):
                items, gone = await self._index_as_stored(astray[start : start + _RECONCILE_BATCH])
                await anyio.to_thread.run_sync(
                    self.titles.update, [(i.item_id, i.title, i.text) for i in items]
                )
                self.titles.remove(gone)
                self._astray.difference_update(i.item_id for i in items)
                self._astray.difference_update(gone)
        except ApplianceError as e:
            log.error(  # noqa: TRY400 - said in full
                "index: %d items a failed write left behind still not written: %s",
                len(self._astray),
                e.message,
            )
        else:
            log.info("index: %d items a failed write left behind written", len(astray))
        finally:
            self._on_change()

    async def reload_titles(self) -> None:
        """Rebuild the dictionary of titles from the store (at start-up, after a restore)."""
        titles = await anyio.to_thread.run_sync(lambda: TitleDictionary(self._store.item_texts()))
        self.titles.replace(titles)
        # Answers kept from before may have missed (or named) items the dictionary now knows.
        self._on_change()

    async def _rewrite(self, item_ids: Sequence[str]) -> tuple[int, int]:
        """Write items to the index again with the vectors it holds (phrases it lacks encoded).

        Returns:
            How many were rewritten, and how many the index refused.

        """
        rewritten = failed = 0
        for start in range(0, len(item_ids), _RECONCILE_BATCH):
            ids = item_ids[start : start + _RECONCILE_BATCH]
            found = await anyio.to_thread.run_sync(self._store.get_items, ids)
            vectors = await anyio.to_thread.run_sync(self._index.vectors, ids)
            phrases = await anyio.to_thread.run_sync(self._index.phrase_vectors, ids)
            _, encoded = await self.encode(
                [], [s.item for s in found.values() if s.item.item_id not in phrases]
            )
            entries = _entries(list(found.values()), vectors, phrases | encoded)
            try:
                await anyio.to_thread.run_sync(self._index.upsert, entries)
            except ApplianceError as e:
                log.exception("index reconcile: %d items not rewritten: %s", len(ids), e.message)
                failed += len(entries)
                continue
            rewritten += len(entries)
            log.info("index: %d of %d entries brought up to date", rewritten, len(item_ids))
        return rewritten, failed

    async def reindex(self) -> ReconcileSummary:
        """Rebuild the index from the store, re-embedding every item."""
        await anyio.to_thread.run_sync(self._index.clear)
        return await self.reconcile()

    # Optimizing holds the index's write lock for as long as building the graphs takes (qdrant-
    # edge-py holds the interpreter lock too, so nothing else in the process runs meanwhile: a
    # few seconds for a segment of 50K items, see ``index.segment_items``), so it waits for a
    # pause in the writes: the quiet period counts from the end of the last upsert, and a new
    # upsert (which spends most of its time encoding, before it writes) puts it off again.
    def _write_started(self) -> None:
        self._writing += 1
        if self._optimizer is not None:
            self._optimizer.cancel()
            self._optimizer = None

    def _write_finished(self) -> None:
        self._writing -= 1
        if self._writing == 0 and self._unoptimized:
            self._schedule_optimize()

    def _schedule_optimize(self) -> None:
        self._optimizer = asyncio.get_running_loop().call_later(
            OPTIMIZE_DELAY, self._start_optimize
        )

    def _start_optimize(self) -> None:
        self._optimizer = None
        if self._writing:
            return  # the last upsert to finish schedules it again
        if self._optimizing is not None and not self._optimizing.done():
            self._schedule_optimize()  # after the running one, for what it did not see
            return
        self._unoptimized = False
        self._optimizing = asyncio.create_task(self._optimize())

    async def _optimize(self) -> None:
        try:
            await anyio.to_thread.run_sync(self._index.optimize)
        except ApplianceError as e:
            # Searches still answer from what was written; the pause after the next write tries
            # again, and until then the graphs count as pending.
            log.error("index optimisation failed: %s", e.message)  # noqa: TRY400 - said in full
            self._unoptimized = True

    @property
    def optimization_pending(self) -> bool:
        """Whether the index took writes that it has not finished optimizing."""
        return self._unoptimized or (self._optimizing is not None and not self._optimizing.done())

    async def close(self) -> None:
        """Cancel pending index maintenance and wait for a running one."""
        if self._optimizer is not None:
            self._optimizer.cancel()
        if self._optimizing is not None:
            await asyncio.gather(self._optimizing, return_exceptions=True)


def texts_to_encode(whole: Sequence[Item], phrased: Sequence[Item]) -> list[str]:
    """Return what writing items encodes: ``whole``'s whole texts, then ``phrased``'s phrases."""
    distinct = dict.fromkeys(p for i in phrased for p in i.phrases)
    return [*(i.embedding_text for i in whole), *distinct]


def _entries(
    stored: Sequence[StoredItem], vectors: dict[str, Vector], phrases: dict[str, Vector]
) -> list[IndexEntry]:
    return [
        IndexEntry(
            item_id=s.item.item_id,
            vector=vectors[s.item.item_id],
            content_hash=s.content_hash,
            seq=s.seq,
            metadata=s.item.metadata,
            text=s.item.embedding_text,
            phrases=phrases.get(s.item.item_id),
        )
        for s in stored
        if s.item.item_id in vectors
    ]
