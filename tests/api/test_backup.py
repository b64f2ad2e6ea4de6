"""Backup and restore through HTTP on the real application (MiniLM, Qdrant Edge, DuckDB): a backup
taken under load restores into a fresh appliance that answers exactly as the original did; a
restore is admin-only, refused into a used appliance, and a damaged, foreign or inconsistent
archive is refused with nothing changed."""

from __future__ import annotations

import asyncio
import io
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from litestar.testing import TestClient

from appliance import archive
from appliance.app import create_app
from appliance.backends.embedders.protocol import Embedder
from appliance.backends.registry import Backends
from appliance.domain import Item
from appliance.settings import Settings
from tests.api.calls import COUNTED, counts, feedback, ids, recommend, serving, stats, upsert
from tests.api.test_auth import ADMIN_KEY, CLIENT_KEY, bearer, keyed_settings
from tests.conftest import make_settings, started_clients
from tests.qdrant_server import server_index

#: Requests answered by every way of building the query, with and without filters.
REQUESTS: dict[str, dict[str, Any]] = {
    "context": {"user_id": "visitor", "context": "a journey through time", "top_k": 10},
    "filtered": {
        "user_id": "visitor",
        "context": "cooking at home",
        "top_k": 5,
        "filters": {"year": {"gte": 2000}},
    },
    "likes": {"user_id": "alice", "top_k": 10},
    "likes+context": {"user_id": "alice", "context": "outer space", "top_k": 10},
    "ratings": {"user_id": "bob", "top_k": 10},
    "mixed": {"user_id": "carol", "context": "a love story", "top_k": 8},
    "seen-kept": {"user_id": "carol", "top_k": 8, "exclude_seen": False},
    "popularity": {"user_id": "first-visit", "top_k": 10},
    "named": {"user_id": "visitor", "context": "Something like Paradox Station", "top_k": 8},
    "bought": {"user_id": "q1", "top_k": 5},
}
#: Sources whose scores come from statistics of the index rather than from the data: BM25's
#: document frequencies still count replaced and deleted entries until the engine vacuums them,
#: which a restored index, written once, has none of.
INDEX_STATISTICS = frozenset({"keyword"})
EMPTY = dict.fromkeys(COUNTED, 0)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def populate(client: TestClient[Any], items: list[dict[str, Any]]) -> None:
    """A catalog with history: likes, dated ratings, dislikes, an edited and a deleted item."""
    upsert(client, items)
    for item in ("sp-1", "sp-2", "sf-1"):
        feedback(client, "alice", item, interaction_type="like")
    for item, rating, day in (("ck-1", 5, "01"), ("ck-2", 4, "15"), ("ro-1", 1, "20")):
        feedback(client, "bob", item, rating=rating, timestamp=f"2026-10-{day}T09:00:00Z")
    feedback(client, "carol", "ro-2", interaction_type="watched")
    feedback(client, "carol", "tt-1", interaction_type="dislike")
    feedback(client, "carol", "gd-1", interaction_type="skip")
    # Items that the same users bought: the collaborative model has something to relate.
    for user in ("p1", "p2", "p3"):
        for item in ("ro-4", "ck-3"):
            feedback(client, user, item, interaction_type="purchase")
    feedback(client, "q1", "ro-4", interaction_type="purchase")
    feedback(client, "gone", "tt-2", interaction_type="like")
    assert client.delete("/users/gone").status_code == 200
    # The text changes (re-embedded), the metadata alone changes, then an item leaves the
    # catalog while feedback still names it.
    edited = dict(items[0], text="A watchmaker repairs clocks in a quiet town.")
    upsert(client, [edited, dict(items[1], metadata={"year": 2030})])
    feedback(client, "alice", "sf-2", interaction_type="like")
    assert client.delete("/items/sf-2").status_code == 204


def answers(client: TestClient[Any]) -> dict[str, dict[str, Any]]:
    """Every request's answer, once the collaborative model has learnt all the feedback."""
    deadline = time.monotonic() + 60.0
    while stats(client)["collaborative"].get("pending", False):
        assert time.monotonic() < deadline, "the collaborative model was never rebuilt"
        time.sleep(0.05)
    return {name: recommend(client, **body) for name, body in REQUESTS.items()}


def assert_same_answers(
    after: dict[str, Any], before: dict[str, Any], *, tolerance: float = 1e-5
) -> None:
    for name, answer in before.items():
        assert after[name]["strategy"] == answer["strategy"], name
        assert ids(after[name]) == ids(answer), name
        for now, was in zip(after[name]["recommendations"], answer["recommendations"], strict=True):
            assert now["sources"].keys() == was["sources"].keys(), name
            exact = {s: v for s, v in was["sources"].items() if s not in INDEX_STATISTICS}
            assert {s: now["sources"][s] for s in exact} == pytest.approx(exact, abs=tolerance), (
                name
            )
            if not was["sources"].keys() & INDEX_STATISTICS:
                assert now["score"] == pytest.approx(was["score"], abs=tolerance), name


def take_backup(client: TestClient[Any], **headers: str) -> bytes:
    response = client.get("/admin/backup", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == archive.MEDIA_TYPE
    assert response.headers["content-disposition"].startswith('attachment; filename="appliance')
    return response.content


def restore(client: TestClient[Any], body: bytes, **params: str) -> httpx.Response:
    return client.post(
        "/admin/restore",
        content=body,
        params=params,
        headers={"content-type": archive.MEDIA_TYPE},
    )


def history(client: TestClient[Any]) -> dict[str, Any]:
    """Everything the API shows about users and their feedback."""
    users = client.get("/users", params={"limit": 1000}).json()["users"]
    return {
        "users": users,
        "profiles": {u["user_id"]: client.get(f"/users/{u['user_id']}").json() for u in users},
        "events": {
            u["user_id"]: client.get(f"/users/{u['user_id']}/feedback").json() for u in users
        },
        "tail": client.get("/feedback", params={"after": 0, "limit": 1000}).json(),
        "catalog": client.get("/items", params={"limit": 1000}).json(),
    }


@pytest.fixture
def source(
    open_client: Callable[[Settings], TestClient[Any]],
    tmp_path: Path,
    test_items: list[dict[str, Any]],
) -> TestClient[Any]:
    client = open_client(make_settings(tmp_path / "source"))
    populate(client, test_items)
    return client


@pytest.fixture
def fresh(open_client: Callable[[Settings], TestClient[Any]], tmp_path: Path) -> TestClient[Any]:
    return open_client(make_settings(tmp_path / "fresh"))


def hashing(data_dir: Path, **overrides: Any) -> Settings:
    """Settings with the hashing embedder, for tests where the model is not what is tested."""
    return make_settings(data_dir, embedder={"kind": "hashing"}, **overrides)


@pytest.fixture
def open_plain() -> Iterator[Callable[[Settings], TestClient[Any]]]:
    """Start the application with the backends its settings name (closed at teardown)."""
    yield from started_clients(create_app)


def hashing_appliance(client: TestClient[Any], items: list[dict[str, Any]]) -> TestClient[Any]:
    """Load ``items`` and some likes into ``client``."""
    for start in range(0, len(items), 1000):
        upsert(client, items[start : start + 1000])
    for n in range(12):
        feedback(client, f"reader-{n % 4}", items[n * 3]["item_id"], interaction_type="like")
    return client


@pytest.fixture
def hashed(
    open_plain: Callable[[Settings], TestClient[Any]],
    tmp_path: Path,
    test_items: list[dict[str, Any]],
) -> TestClient[Any]:
    """The test catalog with some feedback, its vectors from the hashing embedder."""
    return hashing_appliance(open_plain(hashing(tmp_path / "hashed")), test_items)


@pytest.fixture
def target(open_plain: Callable[[Settings], TestClient[Any]], tmp_path: Path) -> TestClient[Any]:
    """An empty appliance on the hashing embedder."""
    return open_plain(hashing(tmp_path / "target"))


@pytest.fixture
def large(open_plain: Callable[[Settings], TestClient[Any]], tmp_path: Path) -> TestClient[Any]:
    """More items than one loading step takes."""
    items = [
        {"item_id": f"doc-{n:04d}", "title": f"Document {n}", "text": f"words about topic {n % 97}"}
        for n in range(1300)
    ]
    return hashing_appliance(open_plain(hashing(tmp_path / "large")), items)


# -- a restore reproduces the appliance ----------------------------------------------------------


def test_a_restored_appliance_answers_exactly_as_the_original(
    source: TestClient[Any], fresh: TestClient[Any]
) -> None:
    before, shown_before, counts_before = answers(source), history(source), counts(source)
    body = take_backup(source)

    response = restore(fresh, body)

    assert response.status_code == 200, response.text
    restored = response.json()
    assert restored.pop("backup_created_at")
    assert restored == {"items": 35, "users": 7, "feedback_events": 17}
    # The catalog was not embedded again, only the sample of 8 items that checks the model.
    assert fresh.get("/stats").json()["encoder"]["texts"] == 8
    assert counts(fresh) == counts_before == {**restored, "index_points": 35}
    assert history(fresh) == shown_before
    assert_same_answers(answers(fresh), before)
    # The restored index has the items' words, the appliance their titles, and the
    # collaborative model what the restored users bought together.
    assert any("collaborative" in r["sources"] for r in before["bought"]["recommendations"])
    assert any("keyword" in r["sources"] for r in before["context"]["recommendations"])
    assert {r["via"].get("named") for r in before["named"]["recommendations"]} >= {"tt-2"}
    assert {a["strategy"] for a in before.values()} == {
        "context",
        "preference",
        "context+preference",
        "popularity",
    }
    # New events continue the original's event ids, past those of the deleted user.
    last = shown_before["tail"]["last_event_id"]
    feedback(fresh, "dave", "tt-3", interaction_type="like")
    assert fresh.get("/feedback").json()["last_event_id"] == last + 1


def test_an_appliance_moves_to_a_qdrant_server_by_backup_and_restore(
    source: TestClient[Any], minilm: Embedder, tmp_path: Path
) -> None:
    before, shown_before = answers(source), history(source)
    body = take_backup(source)

    index = server_index(tmp_path / "qdrant", minilm.dimension)
    try:
        app = create_app(
            make_settings(tmp_path / "moved"), backends=Backends(embedder=minilm, index=index)
        )
        with TestClient(app) as moved:
            assert restore(moved, body).status_code == 200
            # The server's collection took the archived vectors: nothing was embedded again.
            assert moved.get("/stats").json()["encoder"]["texts"] == 8
            assert counts(moved)["index_points"] == 35
            assert history(moved) == shown_before
            # The same vectors, but the embedded index compares them with a request's in float16,
            # the server's stand-in in float32.
            assert_same_answers(answers(moved), before, tolerance=1e-3)
    finally:
        index.close()


#: The sources that read only the request, the items' vectors and the user's own feedback; the
#: others follow what the writers change during the backup (popularity and the collaborative
#: model learn from everyone's feedback, BM25 statistics count every edited entry).
OWN_SOURCES = ["vector", "history"]
#: Requests whose answers nothing written during the backup can change.
SETTLED: dict[str, dict[str, Any]] = {
    "preference": {"user_id": "settled-0", "top_k": 5, "sources": OWN_SOURCES},
    "context+preference": {
        "user_id": "settled-1",
        "context": "a love story",
        "top_k": 5,
        "sources": OWN_SOURCES,
    },
    "filtered": {
        "user_id": "settled-2",
        "top_k": 5,
        "filters": {"year": {"gte": 2000}},
        "sources": OWN_SOURCES,
    },
    "context": {
        "user_id": "visitor",
        "context": "a journey through time",
        "top_k": 5,
        "sources": OWN_SOURCES,
    },
}


def revision(n: int) -> dict[str, Any]:
    """An item about something no settled request is near, edited again and again."""
    return {
        "item_id": "manual",
        "title": "Valve manual",
        "text": f"Torque table for hydraulic valve series {n}, revision {n}.",
    }


@pytest.mark.anyio
async def test_a_backup_taken_under_load_is_one_consistent_snapshot(
    minilm: Embedder, tmp_path: Path, test_items: list[dict[str, Any]]
) -> None:
    backends = Backends(embedder=minilm)
    async with serving(make_settings(tmp_path / "source"), backends) as source:
        items = [*test_items, revision(0)]
        assert (await source.post("/items", json={"items": items})).status_code == 200
        for n, item in enumerate(("sp-1", "sp-3", "ck-1", "ro-2", "tt-1", "ro-1")):
            body = {"user_id": f"settled-{n % 3}", "item_id": item, "rating": 4.5}
            assert (await source.post("/feedback", json=body)).status_code == 200
        before = {
            n: (await source.post("/recommendations", json=b)).json() for n, b in SETTLED.items()
        }
        acknowledged: list[int] = []
        streaming = asyncio.Event()

        async def write_feedback() -> None:
            for n in range(300):
                body = {
                    "user_id": f"late-{n % 7}",
                    "item_id": items[n % 36]["item_id"],
                    "rating": 4,
                }
                response = await source.post("/feedback", json=body)
                assert response.status_code == 200, response.text
                acknowledged.append(n)
                if len(acknowledged) == 20:
                    streaming.set()

        async def edit_the_catalog() -> None:
            for n in range(1, 40):
                response = await source.post("/items", json={"items": [revision(n)]})
                assert response.status_code == 200, response.text

        writers = asyncio.gather(write_feedback(), edit_the_catalog())
        await streaming.wait()
        # The backup, and recommendations, while both writers go on.
        acknowledged_before = len(acknowledged)
        taken, *answered = await asyncio.gather(
            source.get("/admin/backup"),
            *(source.post("/recommendations", json=b) for b in SETTLED.values()),
        )
        acknowledged_after = len(acknowledged)
        await writers
        assert taken.status_code == 200, taken.text
        assert all(r.status_code == 200 for r in answered)
        tail = (await source.get("/feedback", params={"after": 0, "limit": 1000})).json()

    async with serving(make_settings(tmp_path / "fresh"), backends) as fresh:
        response = await fresh.post("/admin/restore", content=taken.content)
        assert response.status_code == 200, response.text
        after = {
            n: (await fresh.post("/recommendations", json=b)).json() for n, b in SETTLED.items()
        }
        restored_tail = (await fresh.get("/feedback", params={"after": 0, "limit": 1000})).json()
        rebuilt = (await fresh.post("/admin/users/rebuild")).json()
        users = (await fresh.get("/users", params={"limit": 1000})).json()["users"]
        manual = (await fresh.get("/items/manual")).json()
        # The vector restored for the edited item is the one of the text restored with it.
        found = (
            await fresh.post(
                "/recommendations",
                json={"user_id": "checker", "context": f"{manual['title']}. {manual['text']}"},
            )
        ).json()

    assert_same_answers(after, before)
    assert ids(found)[0] == "manual"
    # float16 vectors: a cosine within 1e-3.
    assert found["recommendations"][0]["sources"]["vector"] == pytest.approx(1.0, abs=1e-3)
    # The snapshot holds a prefix of the event log: every event acknowledged before the backup
    # was asked for, none acknowledged after it was answered (but one then in its commit).
    events = restored_tail["events"]
    assert 6 + acknowledged_before <= len(events) <= 6 + acknowledged_after + 1
    assert len(events) < len(tail["events"])
    assert events == tail["events"][: len(events)]
    # Each user's stored state agrees with exactly the events the snapshot holds.
    assert rebuilt["max_deviation"] < 1e-6
    for user in users:
        assert user["feedback_count"] == sum(1 for e in events if e["user_id"] == user["user_id"])


# -- who may, and into what ----------------------------------------------------------------------


def test_a_restore_forgets_the_impressions_of_the_appliance_before(
    source: TestClient[Any], fresh: TestClient[Any], test_items: list[dict[str, Any]]
) -> None:
    # Used, then emptied: its one visitor gave no feedback, so only their impression is left.
    upsert(fresh, test_items[:3])
    asked = recommend(fresh, user_id="browser", context="time travel")["request_id"]
    assert fresh.post("/admin/fusion/train").json()["trainings"] == 1
    for item in test_items[:3]:
        assert fresh.delete(f"/items/{item['item_id']}").status_code == 204
    assert fresh.get(f"/admin/impressions/{asked}").status_code == 200

    response = restore(fresh, take_backup(source))

    assert response.status_code == 200, response.text
    assert fresh.get(f"/admin/impressions/{asked}").status_code == 404
    fusion = fresh.get("/admin/fusion").json()
    assert fusion["impressions"]["stored"] == 0
    assert fusion.get("trainings", 0) == 0  # omitted when 0
    assert {k["status"] for k in fusion["kinds"].values()} == {"untrained"}


def test_backup_and_restore_need_an_admin_key(
    open_plain: Callable[[Settings], TestClient[Any]],
    tmp_path: Path,
    test_items: list[dict[str, Any]],
) -> None:
    keyed = open_plain(keyed_settings(tmp_path / "keyed", embedder={"kind": "hashing"}))
    for headers in ({}, bearer("wrong")):
        response = keyed.get("/admin/backup", headers=headers)
        assert response.status_code == 401, response.text
        response = keyed.post("/admin/restore", content=b"x", headers=headers)
        assert response.status_code == 401, response.text
    for method, path in (("GET", "/admin/backup"), ("POST", "/admin/restore")):
        response = keyed.request(method, path, headers=bearer(CLIENT_KEY))
        assert response.status_code == 403, response.text
        assert "needs an admin key" in response.json()["detail"]

    admin = bearer(ADMIN_KEY)
    assert keyed.post("/items", json={"items": test_items}, headers=admin).status_code == 200
    body = take_backup(keyed, **admin)
    other = open_plain(keyed_settings(tmp_path / "other", embedder={"kind": "hashing"}))
    response = other.post("/admin/restore", content=body, headers=bearer(CLIENT_KEY))
    assert response.status_code == 403
    assert other.get("/stats", headers=admin).json()["items"] == 0
    response = other.post("/admin/restore", content=body, headers=admin)
    assert response.status_code == 200, response.text
    assert other.get("/stats", headers=admin).json()["items"] == 36


def test_restoring_into_an_appliance_that_holds_anything_is_409(
    hashed: TestClient[Any], target: TestClient[Any], test_items: list[dict[str, Any]]
) -> None:
    body = take_backup(hashed)
    held = counts(hashed)

    response = restore(hashed, body)

    assert response.status_code == 409, response.text
    assert "not empty (36 items, 4 users, 12 feedback events)" in response.json()["detail"]
    assert "fresh data directory" in response.json()["detail"]
    assert counts(hashed) == held
    # One item is enough to make an appliance not empty.
    upsert(target, test_items[:1])
    assert restore(target, body).status_code == 409
    assert counts(target)["items"] == 1


# -- damaged, foreign and inconsistent archives --------------------------------------------------


def members(body: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        return {m.name: m for m in tar.getmembers()}


def flip_byte(body: bytes, member: str) -> bytes:
    info = members(body)[member]
    at = info.offset_data + info.size // 2
    return body[:at] + bytes([body[at] ^ 0xFF]) + body[at + 1 :]


def foreign_tar() -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        data = b"hello"
        info = tarfile.TarInfo("notes.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


DAMAGES: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "truncated-half": (lambda b: b[: len(b) // 2], "truncated"),
    "truncated-tail": (
        lambda b: b[: members(b)["item_vectors.parquet"].offset_data + 100],
        "truncated",
    ),
    "tampered-items": (lambda b: flip_byte(b, "items.parquet"), "does not match the sha256"),
    "tampered-vectors": (
        lambda b: flip_byte(b, "item_vectors.parquet"),
        "does not match the sha256",
    ),
    "foreign-tar": (lambda _: foreign_tar(), "not a backup of the appliance"),
    "not-a-tar": (lambda _: b'{"items": []}' * 100, "damaged or truncated"),
    "empty": (lambda _: b"", "has no body"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_a_damaged_or_foreign_archive_is_400_and_changes_nothing(
    hashed: TestClient[Any], target: TestClient[Any], damage: str
) -> None:
    body = take_backup(hashed)
    spoil, message = DAMAGES[damage]

    response = restore(target, spoil(body))

    assert response.status_code == 400, response.text
    assert message in response.json()["detail"]
    assert counts(target) == EMPTY
    # Nothing was left behind: the intact archive restores as into a fresh appliance.
    assert restore(target, body).status_code == 200
    assert counts(target) == counts(hashed)


def repack(body: bytes, folder: Path, change: Callable[[str, Path], None]) -> bytes:
    """Rewrite an archive after ``change`` edited its files, with a manifest that matches them:
    an archive whose damage no checksum shows."""
    folder.mkdir()
    manifest = archive.read(_write(folder / "in.tar", body), folder)
    for member in manifest.members:
        change(member.name, folder / member.name)
    fixed = msgspec.structs.replace(
        manifest,
        members=[
            archive.describe(folder / m.name, pq.ParquetFile(folder / m.name).metadata.num_rows)
            for m in manifest.members
        ],
    )
    archive.write(folder / "out.tar", fixed, folder)
    return (folder / "out.tar").read_bytes()


PHRASES = {"index": {"phrases": True}}


def distinct_phrases(client: TestClient[Any]) -> int:
    items = client.get("/items", params={"limit": 100}).json()["items"]
    return len({p for i in items for p in Item(**i).phrases})


def test_phrase_vectors_are_backed_up_and_restored(
    open_client: Callable[[Settings], TestClient[Any]],
    tmp_path: Path,
    test_items: list[dict[str, Any]],
) -> None:
    original = open_client(make_settings(tmp_path / "source", **PHRASES))
    populate(original, test_items)
    before = answers(original)
    assert any("phrases" in r["sources"] for r in before["context"]["recommendations"])
    fresh = open_client(make_settings(tmp_path / "fresh", **PHRASES))

    assert restore(fresh, take_backup(original)).status_code == 200
    # Only the model check's sample was encoded: the phrase vectors came with the archive.
    assert fresh.get("/stats").json()["encoder"]["texts"] == 8
    assert_same_answers(answers(fresh), before)


def test_an_archive_without_phrase_vectors_restores_with_them_encoded(
    source: TestClient[Any], open_client: Callable[[Settings], TestClient[Any]], tmp_path: Path
) -> None:
    # The source keeps no phrase vectors (the default), as archives made before them.
    fresh = open_client(make_settings(tmp_path / "fresh", **PHRASES))

    assert restore(fresh, take_backup(source)).status_code == 200
    # The model check's sample, then each distinct phrase of the restored items: nothing else.
    assert fresh.get("/stats").json()["encoder"]["texts"] == 8 + distinct_phrases(fresh)
    answer = recommend(fresh, user_id="reader", context="noodle soups", sources=["phrases"])
    assert ids(answer)[0] == "ck-3"


def _write(path: Path, body: bytes) -> Path:
    path.write_bytes(body)
    return path


def _swap_vector_rows(name: str, path: Path) -> None:
    # Row 1100 is loaded in the second step, after the first step's vectors are in the index.
    if name == "item_vectors.parquet":
        table = pq.read_table(path)
        ids = table.column("item_id").to_pylist()
        ids[1100], ids[1101] = ids[1101], ids[1100]
        pq.write_table(table.set_column(0, "item_id", pa.array(ids)), path)


def _repeat_an_event(name: str, path: Path) -> None:
    if name == "feedback.parquet":
        table = pq.read_table(path)
        pq.write_table(pa.concat_tables([table, table.slice(3, 1)]), path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_swap_vector_rows, "do not line up with its items"),
        (_repeat_an_event, "does not fit this appliance's feedback table"),
    ],
    ids=["vectors-out-of-line", "duplicate-event"],
)
def test_a_restore_failing_halfway_leaves_the_appliance_empty(
    large: TestClient[Any],
    target: TestClient[Any],
    tmp_path: Path,
    change: Callable[[str, Path], None],
    message: str,
) -> None:
    body = take_backup(large)
    broken = repack(body, tmp_path / "repack", change)

    response = restore(target, broken)

    assert response.status_code == 400, response.text
    assert message in response.json()["detail"]
    assert counts(target) == EMPTY
    assert restore(target, body).status_code == 200
    assert counts(target) == counts(large)


# -- the embedding model -------------------------------------------------------------------------


def test_an_archive_of_another_model_is_refused_or_embedded_again(
    hashed: TestClient[Any], fresh: TestClient[Any]
) -> None:
    body = take_backup(hashed)

    response = restore(fresh, body)

    assert response.status_code == 400, response.text
    detail = response.json()["detail"]
    assert "embedding model hashing-384 (384 dimensions)" in detail
    assert "all-MiniLM-L6-v2 (384)" in detail
    assert "reembed=true" in detail
    assert counts(fresh) == EMPTY

    response = restore(fresh, body, reembed="true")

    assert response.status_code == 200, response.text
    assert response.json()["embedded"] == 36
    assert counts(fresh) == counts(hashed)
    # The preferences were rebuilt from the feedback with this model's vectors.
    assert fresh.post("/admin/users/rebuild").json()["max_deviation"] < 1e-6
    answer = recommend(fresh, user_id="reader-1", top_k=5)
    assert answer["strategy"] == "preference"


def test_vectors_from_other_weights_under_the_same_model_name_are_refused(
    hashed: TestClient[Any], fresh: TestClient[Any], tmp_path: Path
) -> None:
    body = take_backup(hashed)
    (tmp_path / "named").mkdir()
    manifest = archive.read(_write(tmp_path / "named" / "in.tar", body), tmp_path / "named")
    renamed = msgspec.structs.replace(
        manifest, embedder=archive.EmbedderIdentity(name="all-MiniLM-L6-v2", dimension=384)
    )
    archive.write(tmp_path / "named" / "out.tar", renamed, tmp_path / "named")

    response = restore(fresh, (tmp_path / "named" / "out.tar").read_bytes())

    assert response.status_code == 400, response.text
    assert "the model files differ" in response.json()["detail"]
    assert counts(fresh) == EMPTY


# -- size limits ---------------------------------------------------------------------------------


def test_the_archive_has_its_own_size_limit(
    hashed: TestClient[Any], open_plain: Callable[[Settings], TestClient[Any]], tmp_path: Path
) -> None:
    body = take_backup(hashed)
    # Far larger than the body size limit of every other request, and accepted.
    limited = open_plain(hashing(tmp_path / "a", server={"max_body_bytes": len(body) // 4}))
    assert restore(limited, body).status_code == 200
    assert counts(limited) == counts(hashed)

    capped = open_plain(hashing(tmp_path / "b", server={"max_restore_bytes": len(body) // 2}))
    response = restore(capped, body)
    assert response.status_code == 413, response.text
    assert "server.max_restore_bytes" in response.json()["detail"]
    assert counts(capped) == EMPTY
