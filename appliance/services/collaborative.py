"""Item-to-item similarity learnt from the feedback events, kept fresh in the background.

The model is EASE (Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", WWW 2019):
with ``X`` the users x items matrix of who gave feedback on what, the item-to-item weights are
``B = I - P · diag(1 / diag(P))`` with ``P = (XᵀX + λI)⁻¹``, the diagonal forced to zero. A
user's score for item ``j`` is ``Σᵢ xᵢ Bᵢⱼ`` over the items ``i`` of their history. Unlike
normalised co-occurrence (item-kNN), each weight is learnt jointly with all the others, so items
that merely co-occur with everything (the popular ones) do not crowd out the specific
neighbours. It has a closed form: a rebuild needs no training loop, no learning rate and no
number of epochs.

The inverse is of an items x items matrix, so the model covers the ``max_items`` items with the
most users: its memory grows with the square of that. Every weight is kept, negative ones
included: they are how EASE says that an item makes another less likely (measured on the
leave-last-out task: HR@10 0.124 with all of them, 0.108 with each item's 200 or 1,000
largest kept). It is rebuilt from the store in a worker
thread after new feedback, never on a request's path, with one BLAS thread and at most a set
share of the time (see :class:`CollaborativeModel`).

Each build also keeps every item's nearest items by plain co-occurrence, the cosine similarity
of who chose them (item-kNN), for finding more like one item: EASE's weights are learnt to
score a whole history, each given all the other items, and one item's row of them ranks its
neighbours below co-occurrence does (see ``CollaborativeSource``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import logging
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeAlias

import anyio
import anyio.to_thread
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import scipy.linalg.cython_lapack
import scipy.sparse
from threadpoolctl import threadpool_limits

from appliance.backends.indexes.protocol import Vector
from appliance.backends.stores.duckdb_store import DuckDBStore
from appliance.services.neighbourhood import Neighbourhood, strongest_in_rows
from appliance.settings import CollaborativeSettings

log = logging.getLogger(__name__)

#: Weights below this fraction of their row's largest are taken for zero (float32 rounding).
_NOISE = 1e-5
#: Rows of a dense items x items matrix handled at once: bounds what a step allocates beside
#: the matrix itself to this many rows.
_BLOCK_ROWS = 256

#: Nearest items kept per item by co-occurrence (``ItemSimilarity.cooccurrence``).
COOCCURRENCE_NEIGHBOURS = 100

#: Item-to-item weights: dense (EASE), or sparse (a nearest-neighbour model).
Weights: TypeAlias = npt.NDArray[np.float32] | scipy.sparse.csr_matrix


class ItemSimilarity:
    """One built model: sparse item-to-item weights, read-only and safe to share across threads."""

    def __init__(
        self,
        item_ids: Sequence[str],
        weights: Weights,
        *,
        pairs: int,
        users: int,
        build_seconds: float,
    ) -> None:
        self.item_ids = list(item_ids)
        self._position = {item: n for n, item in enumerate(self.item_ids)}
        self._weights = weights
        self.pairs = pairs
        """(user, item) pairs the model was learnt from."""
        self.users = users
        """Users those pairs came from."""
        self.build_seconds = build_seconds
        """Wall-clock time the build took."""
        self.neighbourhood: Neighbourhood | None = None
        """The items' vectors blended with their neighbours' (the neighbourhood source), when
        built; set before the model is published."""
        self.cooccurrence: ItemSimilarity | None = None
        """The same items' nearest items by co-occurrence (see :func:`cooccurrence`), when
        built; set before the model is published."""

    @property
    def nbytes(self) -> int:
        """Memory held by the weights, the neighbourhood and the co-occurrence."""
        w = self._weights
        held = (
            w.nbytes
            if isinstance(w, np.ndarray)
            else w.data.nbytes + w.indices.nbytes + w.indptr.nbytes
        )
        if self.neighbourhood is not None:
            held += self.neighbourhood.nbytes
        if self.cooccurrence is not None:
            held += self.cooccurrence.nbytes
        return int(held)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._position

    def strongest_neighbours(self, size: int) -> npt.NDArray[np.int64]:
        """Return, for each item, the positions of the ``size`` items it points to most.

        Only items with a positive weight count; -1 fills the rest of a row.
        """
        w = self._weights
        blocks = [
            strongest_in_rows(
                w[start : start + _BLOCK_ROWS]
                if isinstance(w, np.ndarray)
                else w[start : start + _BLOCK_ROWS].toarray(),
                size,
            )
            for start in range(0, len(self.item_ids), _BLOCK_ROWS)
        ]
        return np.concatenate(blocks) if blocks else np.empty((0, size), dtype=np.int64)

    def neighbours(self, profile: Mapping[str, float], limit: int) -> list[tuple[str, float]]:
        """Return the items a profile points to most, best first.

        Args:
            profile: Item id -> how much the item counts (items outside the model are ignored).
            limit: Most items returned.

        Returns:
            (item id, score) of items with a positive score, the profile's own items left out.

        """
        rows, amounts = self._rows(profile)
        if rows.size == 0 or limit < 1:
            return []
        scores = self._scores(rows, amounts)
        scores[rows] = 0.0
        positive = np.flatnonzero(scores > 0.0)
        if positive.size > limit:
            positive = positive[np.argpartition(-scores[positive], limit - 1)[:limit]]
        # Descending score, then item position: the same input always gives the same order.
        chosen = positive[np.lexsort((positive, -scores[positive]))]
        return [(self.item_ids[j], float(scores[j])) for j in chosen.tolist()]

    def strongest_sources(
        self,
        profile: Mapping[str, float],
        item_ids: Sequence[str],
        preferred: Collection[str] = (),
    ) -> dict[str, str]:
        """Return, for each given item, the profile item whose weight contributed most to it.

        Args:
            profile: As for :meth:`neighbours`.
            item_ids: The items to explain.
            preferred: Profile items to name when one of them contributed anything (the ones
                the user liked, say), even if another item contributed more.

        """
        rows, amounts = self._rows(profile)
        targets = [self._position[i] for i in item_ids if i in self._position]
        if rows.size == 0 or not targets:
            return {}
        w = self._weights
        columns = np.asarray(targets, dtype=np.int64)
        block = (
            w[np.ix_(rows, columns)] if isinstance(w, np.ndarray) else w[rows][:, columns].toarray()
        )
        contributions = block * amounts[:, None]
        strongest = np.argmax(contributions, axis=0)
        chosen = np.array([self.item_ids[r] in preferred for r in rows.tolist()])
        if chosen.any():
            among = np.where(chosen[:, None], contributions, -np.inf)
            best = np.argmax(among, axis=0)
            found = among[best, np.arange(len(targets))] > 0.0
            strongest = np.where(found, best, strongest)
        return {
            self.item_ids[t]: self.item_ids[int(rows[v])]
            for t, v in zip(targets, strongest.tolist(), strict=True)
        }

    def _scores(
        self, rows: npt.NDArray[np.int64], amounts: npt.NDArray[np.float32]
    ) -> npt.NDArray[np.float32]:
        # The profile as a sparse row: the product reads only the profile's rows of the
        # matrix, without copying them out first (a third of the time for long histories).
        n = len(self.item_ids)
        profile = scipy.sparse.csr_matrix((amounts, (np.zeros_like(rows), rows)), shape=(1, n))
        product = profile @ self._weights
        dense = product.toarray() if scipy.sparse.issparse(product) else product
        return np.asarray(dense, dtype=np.float32).ravel()

    def _rows(
        self, profile: Mapping[str, float]
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        known = [(self._position[i], w) for i, w in profile.items() if i in self._position]
        rows = np.fromiter((p for p, _ in known), dtype=np.int64, count=len(known))
        amounts = np.fromiter((w for _, w in known), dtype=np.float32, count=len(known))
        return rows, amounts


def fit(interactions: pa.Table, settings: CollaborativeSettings) -> ItemSimilarity | None:
    """Learn item-to-item weights from (user, item) pairs (``DuckDBStore.interactions``).

    Every pair counts as one: that a user engaged with an item at all says more about what
    goes together than how they rated it (a rating is only given to something watched, read or
    bought). Items need at least two users to have neighbours.

    Returns:
        The model (EASE's weights) with its items' nearest items by co-occurrence, or ``None``
        when fewer than two items have two users.

    """
    started = time.perf_counter()
    user_ids, user_codes = _codes(interactions["user_id"])
    item_ids, item_codes = _codes(interactions["item_id"])
    counts = np.bincount(item_codes, minlength=len(item_ids))
    eligible = np.flatnonzero(counts >= 2)  # noqa: PLR2004 - co-occurrence needs two users
    if eligible.size < 2:  # noqa: PLR2004
        return None
    # The most-used items; ties broken by code so that a rebuild of the same data is identical.
    order = np.lexsort((eligible, -counts[eligible]))
    kept = np.sort(eligible[order[: settings.max_items]])
    column = np.full(len(item_ids), -1, dtype=np.int64)
    column[kept] = np.arange(kept.size)
    mask = column[item_codes] >= 0
    x = scipy.sparse.csr_matrix(
        (
            np.ones(int(mask.sum()), dtype=np.float32),
            (user_codes[mask], column[item_codes[mask]]),
        ),
        shape=(len(user_ids), kept.size),
    )
    # One BLAS thread: a rebuild must not take the cores that requests are served on.
    with threadpool_limits(limits=1, user_api="blas"):
        gram = _gram(x)
        # Before EASE turns the Gram matrix into its weights, in place: the co-occurrence
        # counts are its entries.
        alike = _strongest_cosines(
            lambda start, stop: gram[start:stop].copy(),
            np.sqrt(np.diag(gram)),
            COOCCURRENCE_NEIGHBOURS,
        )
        weights = _ease(gram, settings.l2)
    items, users = [item_ids[c] for c in kept.tolist()], int(np.count_nonzero(np.diff(x.indptr)))
    model = ItemSimilarity(items, weights, pairs=x.nnz, users=users, build_seconds=0.0)
    model.cooccurrence = ItemSimilarity(items, alike, pairs=x.nnz, users=users, build_seconds=0.0)
    model.build_seconds = time.perf_counter() - started
    return model


def cooccurrence(x: scipy.sparse.spmatrix, keep: int) -> scipy.sparse.csr_matrix:
    """Return item-to-item cosine similarities of who chose what, each item's ``keep`` largest.

    Args:
        x: Users x items, 1 where a user chose an item (every item chosen by someone).
        keep: Most neighbours kept per item; only positive similarities are.

    Returns:
        Items x items, sparse, with a zero diagonal.

    """
    columns = scipy.sparse.csc_matrix(x, dtype=np.float32)
    norms = np.sqrt(np.asarray(columns.sum(axis=0), dtype=np.float32).ravel())
    # A block of rows at a time: the dense similarities of every pair of items may not fit.
    return _strongest_cosines(
        lambda start, stop: (columns[:, start:stop].T @ columns).toarray(), norms, keep
    )


def _strongest_cosines(
    counts: Callable[[int, int], npt.NDArray[np.float32]],
    norms: npt.NDArray[np.float32],
    keep: int,
) -> scipy.sparse.csr_matrix:
    """Turn co-occurrence counts into cosines, a block of rows at a time, keeping the largest.

    Args:
        counts: Rows ``start`` to ``stop`` of the items x items co-occurrence counts, as a new
            array (it is scaled in place).
        norms: The square root of each item's number of users.
        keep: Most neighbours kept per item.

    """
    n = len(norms)
    blocks = []
    for start in range(0, n, _BLOCK_ROWS):
        stop = min(start + _BLOCK_ROWS, n)
        block = counts(start, stop)
        block /= norms[start:stop, None] * norms[None, :]
        block[np.arange(stop - start), np.arange(start, stop)] = 0.0
        blocks.append(_largest_in_rows(block, keep))
    return scipy.sparse.vstack(blocks, format="csr") if blocks else scipy.sparse.csr_matrix((0, 0))


def _largest_in_rows(block: npt.NDArray[np.float32], keep: int) -> scipy.sparse.csr_matrix:
    """Keep the ``keep`` largest positive entries of every row, as a sparse matrix."""
    keep = max(1, min(keep, block.shape[1] - 1))
    top = np.argpartition(-block, keep - 1, axis=1)[:, :keep]
    picked = np.take_along_axis(block, top, axis=1)
    rows, columns = np.nonzero(picked > 0.0)
    return scipy.sparse.csr_matrix(
        (picked[rows, columns], (rows, top[rows, columns])), shape=block.shape
    )


def _codes(column: pa.ChunkedArray) -> tuple[list[str], npt.NDArray[np.int64]]:
    """Return the sorted distinct ids of a column and each row's position among them.

    Sorted, so that the matrix, and with it every rounding in its inverse, is the same however
    the store happened to order the rows.
    """
    distinct = pc.unique(column)
    distinct = distinct.take(pc.sort_indices(distinct))
    codes = pc.index_in(column, value_set=distinct).to_numpy(zero_copy_only=False)
    return distinct.to_pylist(), codes.astype(np.int64)


def _gram(x: scipy.sparse.csr_matrix) -> npt.NDArray[np.float32]:
    """Return ``xᵀx``, how many users each pair of items shares, as a dense float32 matrix."""
    n = x.shape[1]
    gram = np.empty((n, n), dtype=np.float32)
    columns = x.tocsc()
    # A block of rows at a time: the sparse product of the whole matrix would hold up to n²
    # entries with their indices, three times the dense matrix.
    for start in range(0, n, _BLOCK_ROWS):
        block = columns[:, start : start + _BLOCK_ROWS]
        gram[start : start + block.shape[1]] = (block.T @ x).toarray()
    return gram


def _ease(gram: npt.NDArray[np.float32], l2: float) -> npt.NDArray[np.float32]:
    """Return EASE's item-to-item weights, made from the Gram matrix ``xᵀx`` in place."""
    n = gram.shape[0]
    gram[np.diag_indices_from(gram)] += l2
    # In place throughout: the dense n x n matrix exists once, and its rows, which requests
    # read, stay contiguous.
    weights = gram
    _invert_positive_definite(weights)
    weights *= (-1.0 / np.diag(weights))[None, :]
    np.fill_diagonal(weights, 0.0)
    for start in range(0, n, _BLOCK_ROWS):
        rows = weights[start : start + _BLOCK_ROWS]
        # Weights this small beside their row's largest are rounding noise of single precision
        # where exact arithmetic gives zero (items that no user shares).
        rows[np.abs(rows) <= _NOISE * np.abs(rows).max(axis=1, keepdims=True)] = 0.0
    return weights


#: ``PyCapsule_GetName`` and ``PyCapsule_GetPointer`` with prototypes of their own (setting them
#: on ``ctypes.pythonapi``'s shared functions would change them for everyone).
_CAPSULE_NAME = ctypes.PYFUNCTYPE(ctypes.c_char_p, ctypes.py_object)(
    ("PyCapsule_GetName", ctypes.pythonapi)
)
_CAPSULE_POINTER = ctypes.PYFUNCTYPE(ctypes.c_void_p, ctypes.py_object, ctypes.c_char_p)(
    ("PyCapsule_GetPointer", ctypes.pythonapi)
)
_INT_P = ctypes.POINTER(ctypes.c_int)
#: ``(uplo, n, a, lda, info)``, the shape of LAPACK's potrf and potri.
_TRIANGLE_ROUTINE = ctypes.CFUNCTYPE(None, ctypes.c_char_p, _INT_P, ctypes.c_void_p, _INT_P, _INT_P)


@functools.cache
def _lapack_routine(name: str) -> Callable[..., None]:
    """Return one of SciPy's single-precision LAPACK routines ``(uplo, n, a, lda, info)``.

    Called through ctypes, which lets go of the interpreter for the call: SciPy's Python
    wrappers hold it throughout, so an inversion of seconds stopped every request for seconds.
    """
    capsule = scipy.linalg.cython_lapack.__pyx_capi__[name]
    address = _CAPSULE_POINTER(capsule, _CAPSULE_NAME(capsule))
    routine: Callable[..., None] = _TRIANGLE_ROUTINE(address)
    return routine


def _invert_positive_definite(matrix: npt.NDArray[np.float32]) -> None:
    """Replace a symmetric positive definite C-ordered float32 matrix by its inverse, in place.

    Cholesky (potrf, potri): a third of the work of a general inverse, and no copy.

    Raises:
        ValueError: LAPACK reported the matrix singular or not positive definite.

    """
    n = matrix.shape[0]
    size = ctypes.c_int(n)
    info = ctypes.c_int(0)
    # The C-ordered matrix is its own transpose in Fortran order: LAPACK's lower triangle
    # is the upper triangle of the rows read here.
    for name in ("spotrf", "spotri"):
        _lapack_routine(name)(
            b"L", ctypes.byref(size), matrix.ctypes.data, ctypes.byref(size), ctypes.byref(info)
        )
        if info.value != 0:
            raise ValueError(f"{name} failed with info {info.value}")
    # Only the upper triangle holds the inverse: mirror it below, a block of rows at a time.
    for start in range(0, n, _BLOCK_ROWS):
        stop = min(start + _BLOCK_ROWS, n)
        block = matrix[start:stop, start:stop]
        block[...] = np.triu(block) + np.triu(block, 1).T
        matrix[stop:, start:stop] = matrix[start:stop, stop:].T


@dataclass(frozen=True, slots=True)
class ModelStatus:
    """What the live model is, for /stats and the logs."""

    items: int
    pairs: int
    users: int
    memory_bytes: int
    build_seconds: float
    built_at: datetime | None
    """When the model in use was built, ``None`` before the first build."""
    pending: bool
    """Feedback has changed since the build in use; a rebuild is scheduled."""


class CollaborativeModel:
    """The live item-similarity model, rebuilt in the background as feedback changes.

    Requests read :attr:`current`, which is replaced atomically when a rebuild finishes and is
    never waited for. A change (new feedback, a deleted user or item) marks the model stale;
    the refresher then rebuilds it no sooner than ``refresh_seconds`` after the previous build
    started and no sooner than the previous build's duration divided by ``max_cpu_share``, so
    that rebuilding takes at most that share of one core however large the history grows. A
    change is therefore in the model within that pause plus one build.
    """

    def __init__(
        self,
        store: DuckDBStore,
        settings: CollaborativeSettings,
        *,
        on_rebuilt: Callable[[], None] | None = None,
        vectors: Callable[[Sequence[str]], Mapping[str, Vector]] | None = None,
    ) -> None:
        """Make the model; the refresher starts with :meth:`start`.

        Args:
            store: Where the feedback is read from.
            settings: The ``[collaborative]`` settings.
            on_rebuilt: Called on the event loop after each rebuild.
            vectors: Reads the catalog items' vectors, for the neighbourhood
                (``collaborative.neighbourhood``); without it none is built.

        """
        self._store = store
        self._settings = settings
        self._on_rebuilt = on_rebuilt
        self._vectors = vectors
        self.current: ItemSimilarity | None = None
        """The model requests use; ``None`` until a first build has items to relate."""
        self._stale = asyncio.Event()
        self._built_at: datetime | None = None
        self._next_start = 0.0
        self._generation = 0
        self._built_generation = 0
        self._built = asyncio.Condition()
        # One rebuild at a time, from reading the feedback to putting the model in use: a
        # build that read it earlier must never replace one that read it later (the refresher
        # and a set-point rebuild can both be under way).
        self._building = asyncio.Lock()
        # Its fit in a thread of its own, outside the shared request thread pool.
        self._limiter = anyio.CapacityLimiter(1)
        self._task: asyncio.Task[None] | None = None

    def changed(self) -> None:
        """Note that the feedback or the catalog changed: the model will be rebuilt."""
        self._generation += 1
        self._stale.set()

    async def start(self) -> None:
        """Start the background refresher; the first build begins at once."""
        self.changed()
        self._task = asyncio.create_task(self._refresh_forever(), name="collaborative-refresh")

    async def close(self) -> None:
        """Stop the refresher; a build in progress is abandoned."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def wait_fresh(self) -> ItemSimilarity | None:
        """Wait until every change noted so far is in the model, and return the model.

        For batch work (the evaluation, tests) that must see its own feedback; requests never
        wait.
        """
        wanted = self._generation
        async with self._built:
            await self._built.wait_for(lambda: self._built_generation >= wanted)
        return self.current

    async def rebuild(self) -> ItemSimilarity | None:
        """Rebuild the model now from every change so far, and return it.

        For batch work that decides when the model changes, with the refresher held off (an
        infinite ``refresh_seconds``): the evaluation rebuilds it at set points. A rebuild timed
        by the refresher lands wherever the work has got to by then, so what the work measures
        with the model would change from run to run with the machine's speed.
        """
        generation = self._generation
        self._stale.clear()
        await self._rebuild()
        await self._mark_built(generation)
        return self.current

    async def _mark_built(self, generation: int) -> None:
        """Note that every change up to ``generation`` is in the model; wake who waits for it."""
        async with self._built:
            self._built_generation = max(self._built_generation, generation)
            self._built.notify_all()

    def status(self) -> ModelStatus:
        """Describe the model in use."""
        model = self.current
        return ModelStatus(
            items=0 if model is None else len(model.item_ids),
            pairs=0 if model is None else model.pairs,
            users=0 if model is None else model.users,
            memory_bytes=0 if model is None else model.nbytes,
            build_seconds=0.0 if model is None else model.build_seconds,
            built_at=self._built_at,
            pending=self._built_generation < self._generation,
        )

    async def _refresh_forever(self) -> None:
        while True:
            await self._stale.wait()
            pause = self._next_start - time.monotonic()
            if pause > 0:
                await asyncio.sleep(pause)
            self._stale.clear()
            generation = self._generation
            started = time.monotonic()
            try:
                await self._rebuild()
            except Exception:
                # Requests keep the previous model; the next change tries again.
                log.exception("rebuilding the collaborative model failed")
            elapsed = time.monotonic() - started
            self._next_start = started + max(
                self._settings.refresh_seconds, elapsed / self._settings.max_cpu_share
            )
            await self._mark_built(generation)

    def _build(self, interactions: pa.Table) -> ItemSimilarity | None:
        """Fit the model and, when it has a reader of vectors, its neighbourhood."""
        model = fit(interactions, self._settings)
        size = self._settings.neighbourhood
        if model is None or size == 0 or self._vectors is None:
            return model
        started = time.perf_counter()
        try:
            # Read in the rebuild's thread, with the rest of it: an item's new text reaches the
            # neighbourhood at the next rebuild.
            vectors = self._vectors(model.item_ids)
        except Exception:
            # An index that cannot be read now (a Qdrant server out of reach) must not keep the
            # new feedback out of the collaborative source.
            log.exception("reading the items' vectors failed; this model has no neighbourhood")
            return model
        model.neighbourhood = Neighbourhood.build(
            model.item_ids, model.strongest_neighbours(size), vectors
        )
        model.build_seconds += time.perf_counter() - started
        return model

    async def _rebuild(self) -> None:
        async with self._building:
            interactions = await anyio.to_thread.run_sync(self._store.interactions)
            # Abandoned on shutdown rather than waited for: the fit touches nothing but its
            # input, and its result would be thrown away anyway.
            model = await anyio.to_thread.run_sync(
                self._build, interactions, limiter=self._limiter, abandon_on_cancel=True
            )
            self.current = model
        self._built_at = datetime.now(UTC)
        if self._on_rebuilt is not None:
            self._on_rebuilt()
        if model is not None:
            log.info(
                "collaborative model: %d items from %d pairs of %d users in %.2f s (%.1f MB)",
                len(model.item_ids),
                model.pairs,
                model.users,
                model.build_seconds,
                model.nbytes / 1e6,
            )
