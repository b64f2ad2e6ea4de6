"""The keyword, phrase and named-item sources through HTTP, on the real model, index and database.

Each runs on the generic test catalog and on a generated catalog of hardware products.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from litestar.testing import TestClient

from appliance.app import create_app
from appliance.backends.embedders.protocol import Embedder
from appliance.backends.indexes.protocol import IndexEntry
from appliance.backends.indexes.qdrant_edge import QdrantEdgeIndex
from appliance.backends.registry import Backends
from appliance.backends.stores.duckdb_store import DuckDBStore
from appliance.domain import Item
from appliance.settings import Settings
from tests.api.calls import feedback, ids, recommend, stats, upsert
from tests.backends.test_qdrant_edge_upgrade import write_legacy_index
from tests.conftest import make_settings

INDEX_FOLDER = Path("index") / "all-MiniLM-L6-v2-384"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings of an appliance that keeps phrase vectors, so that every text source runs."""
    return make_settings(tmp_path / "data", index={"phrases": True})


def ask(client: TestClient[Any], context: str, *sources: str, **body: Any) -> dict[str, Any]:
    """Recommendations for a new user from the named sources only (all when none are named)."""
    fields: dict[str, Any] = {"user_id": "reader", "context": context, "top_k": 5, **body}
    if sources:
        fields["sources"] = list(sources)
    return recommend(client, **fields)


def products() -> list[dict[str, Any]]:
    """A catalog of hardware products, nothing like films or books: 6 kinds x 8 brands."""
    kinds = {
        "Cordless Drill": ("drill", "Drills holes in wood, metal and masonry; two batteries."),
        "Circular Saw": ("saw", "Cuts timber and plywood sheets with a carbide-tipped blade."),
        "Orbital Sander": ("sander", "Smooths wood surfaces with hook-and-loop sanding discs."),
        "Pressure Washer": ("washer", "Cleans patios, cars and fences with a high-pressure jet."),
        "Leaf Blower": ("blower", "Clears leaves and grass cuttings from lawns and paths."),
        "Hedge Trimmer": ("trimmer", "Shapes hedges and shrubs with a double-sided blade."),
    }
    brands = ("Voltra", "Brakka", "Norrik", "Temple", "Quillon", "Ardent", "Silvo", "Makaro")
    items = []
    for k, (kind, (category, text)) in enumerate(kinds.items()):
        for b, brand in enumerate(brands):
            items.append(
                {
                    "item_id": f"p-{category}-{b}",
                    "title": f"{brand} {kind} {k + 2}{b}X",
                    "text": f"{text} Part number ZQ-{k}{b}{k}7.",
                    "metadata": {"category": category, "price": 40 + 15 * b, "brand": brand},
                }
            )
    return items


# -- the generic test catalog ---------------------------------------------------------------


def test_health_lists_the_text_sources(catalog_client: TestClient[Any]) -> None:
    sources = catalog_client.get("/health").json()["sources"]
    assert {"vector", "keyword", "phrases", "named"} <= set(sources)


def test_keyword_finds_items_by_a_rare_word_the_embedding_misses(
    catalog_client: TestClient[Any],
) -> None:
    # "coastal" is in one item's text (ro-2); the embedding ranks other items above it.
    for word, item in (("coastal", "ro-2"), ("scoring", "ck-2")):
        assert item not in ids(ask(catalog_client, word, "vector"))
        answer = ask(catalog_client, word, "keyword")
        assert ids(answer) == [item]
        assert set(answer["recommendations"][0]["sources"]) == {"keyword"}
        # Fused with the other sources, the keyword hit is among the first five.
        assert item in ids(ask(catalog_client, word))


def test_keyword_respects_filters_and_exclude_seen(catalog_client: TestClient[Any]) -> None:
    context = "time travel"
    everything = ids(ask(catalog_client, context, "keyword", top_k=20))
    assert {"tt-4", "tt-5", "tt-6"} <= set(everything)
    novels = ask(catalog_client, context, "keyword", top_k=20, filters={"format": "novel"})
    assert ids(novels)
    assert all(r["metadata"]["format"] == "novel" for r in novels["recommendations"])
    assert set(ids(novels)) < set(everything)

    feedback(catalog_client, "reader", "tt-4", interaction_type="like")
    assert "tt-4" not in ids(ask(catalog_client, context, "keyword", top_k=20))
    assert "tt-4" in ids(ask(catalog_client, context, "keyword", top_k=20, exclude_seen=False))


def test_named_source_recommends_neighbours_of_the_named_item(
    catalog_client: TestClient[Any],
) -> None:
    answer = ask(catalog_client, "Something like Paradox Station, please", "named", top_k=4)
    found = ids(answer)
    assert len(found) == 4
    assert "tt-2" not in found
    assert sum(i.startswith("tt-") for i in found) >= 3
    for rec in answer["recommendations"]:
        assert rec["via"] == {"named": "tt-2"}
        assert set(rec["sources"]) == {"named"}
    # The named item is left out of the fused answer too: the user knows it.
    assert "tt-2" not in ids(ask(catalog_client, "Something like Paradox Station", top_k=10))


def test_named_source_reports_which_named_item_each_hit_came_through(
    catalog_client: TestClient[Any],
) -> None:
    answer = ask(catalog_client, "I loved Paradox Station and Pasta by Hand", "named", top_k=10)
    via = [(r["item_id"], r["via"]["named"]) for r in answer["recommendations"]]
    assert not {"tt-2", "ck-5"} & {item for item, _ in via}
    # Best first: each named item's nearest neighbours are of its own kind.
    through_station = [item for item, named in via if named == "tt-2"]
    through_pasta = [item for item, named in via if named == "ck-5"]
    assert len(through_station) + len(through_pasta) == len(via)
    assert all(item.startswith("tt-") for item in through_station[:3])
    assert all(item.startswith("ck-") for item in through_pasta[:3])


def test_named_source_ignores_short_common_words(catalog_client: TestClient[Any]) -> None:
    upsert(
        catalog_client,
        [
            {"item_id": "w-it", "title": "It", "text": "A clown haunts a small town."},
            {"item_id": "w-up", "title": "Up", "text": "A house flies away on balloons (2009)."},
            {"item_id": "w-her", "title": "Her", "text": "A man falls for a voice."},
        ],
    )
    for context in (
        "It is late and I am up for something romantic for her",
        "Up next: her favourite time of year. It rains.",
    ):
        assert ids(ask(catalog_client, context, "named")) == []
        answer = ask(catalog_client, context, top_k=36)
        assert not any("named" in r["sources"] for r in answer["recommendations"])
    # Marked as a title by a remark that fits the item, it is recognised.
    assert ids(ask(catalog_client, "I loved Up (2009)", "named"))
    assert ids(ask(catalog_client, "I loved Up (and down)", "named")) == []


def test_filters_and_exclude_seen_apply_to_named_neighbours(
    catalog_client: TestClient[Any],
) -> None:
    feedback(catalog_client, "reader", "tt-5", interaction_type="like")
    films = ask(
        catalog_client, "like Paradox Station", "named", top_k=10, filters={"format": "film"}
    )
    assert ids(films)
    assert all(r["metadata"]["format"] == "film" for r in films["recommendations"])
    assert "tt-5" not in ids(films)
    assert "tt-5" in ids(
        ask(catalog_client, "like Paradox Station", "named", top_k=35, exclude_seen=False)
    )


def test_updates_and_deletes_reach_both_sources(catalog_client: TestClient[Any]) -> None:
    assert catalog_client.delete("/items/ro-2").status_code == 204
    assert ids(ask(catalog_client, "coastal", "keyword")) == []
    assert ids(ask(catalog_client, "like The Wedding Planner's Secret", "named")) == []
    for context in ("wedding coastal groom", "like Letters from Lisbon"):
        assert "ro-2" not in ids(ask(catalog_client, context, top_k=36))

    upsert(
        catalog_client,
        [
            {
                "item_id": "ck-2",
                "title": "Wild Yeast Chronicles",
                "text": "Baking bread at home: starters, hydration, shaping loaves.",
                "metadata": {"category": "cooking", "format": "book"},
            }
        ],
    )
    renamed = ask(catalog_client, "more like Wild Yeast Chronicles", "named")
    assert ids(renamed)
    assert {r["via"]["named"] for r in renamed["recommendations"]} == {"ck-2"}
    assert ids(ask(catalog_client, "more like The Sourdough Year", "named")) == []
    assert ids(ask(catalog_client, "chronicles", "keyword")) == ["ck-2"]
    assert ids(ask(catalog_client, "scoring", "keyword")) == []


def test_phrases_follow_filters_exclude_seen_updates_and_deletes(
    catalog_client: TestClient[Any],
) -> None:
    context = "noodle soups"
    assert ids(ask(catalog_client, context, "phrases"))[0] == "ck-3"
    books = ask(catalog_client, context, "phrases", top_k=20, filters={"format": "book"})
    assert ids(books)
    assert all(r["metadata"]["format"] == "book" for r in books["recommendations"])

    feedback(catalog_client, "reader", "ck-3", interaction_type="like")
    assert "ck-3" not in ids(ask(catalog_client, context, "phrases", top_k=36))
    assert ids(ask(catalog_client, context, "phrases", exclude_seen=False))[0] == "ck-3"

    rewritten = {
        "item_id": "ck-3",
        "title": "Street Food Nights",
        "text": "Stories of night markets, lantern festivals and ferry crossings.",
    }
    upsert(catalog_client, [rewritten])
    assert ids(ask(catalog_client, context, "phrases", exclude_seen=False))[0] != "ck-3"
    assert ids(ask(catalog_client, "lantern festivals", "phrases", exclude_seen=False))[0] == "ck-3"
    assert catalog_client.delete("/items/ck-3").status_code == 204
    assert "ck-3" not in ids(
        ask(catalog_client, "lantern festivals", "phrases", top_k=36, exclude_seen=False)
    )


# -- generated catalogs of products and hotels ----------------------------------------------


def test_keyword_and_named_sources_on_a_product_catalog(client: TestClient[Any]) -> None:
    catalog = products()
    upsert(client, catalog)
    # A part number is one token the embedding cannot read; keyword search matches it exactly.
    answer = ask(client, "do you still stock ZQ-3537?", "keyword")
    assert ids(answer)[0] == "p-washer-5"
    assert set(ids(ask(client, "brakka", "keyword", top_k=10))) == {
        f"p-{c}-1" for c in ("blower", "drill", "sander", "saw", "trimmer", "washer")
    }
    cheap = ask(client, "hedge trimmer", "keyword", top_k=10, filters={"price": {"lte": 70}})
    assert ids(cheap)
    assert all(r["metadata"]["price"] <= 70 for r in cheap["recommendations"])
    assert all(r["metadata"]["category"] == "trimmer" for r in cheap["recommendations"])

    named = ask(client, "Anything like the Norrik Circular Saw 32X but cheaper?", "named", top_k=5)
    assert "p-saw-2" not in ids(named)
    assert {r["via"]["named"] for r in named["recommendations"]} == {"p-saw-2"}
    assert sum(r["metadata"]["category"] == "saw" for r in named["recommendations"]) >= 4
    # Brand names alone are everyday words of this catalog, not titles.
    assert ids(ask(client, "I want a Norrik saw", "named")) == []


def hotels() -> list[dict[str, Any]]:
    """Six hotels, each described in many clauses: only one clause of one says dogs are welcome."""
    described = {
        "harbour": (
            "Harbour View Hotel",
            (
                "Rooms overlook the old harbour and the fish market, breakfast is served until "
                "eleven, parking costs extra, the lift reaches every floor, the restaurant serves "
                "oysters and lobster, a ferry leaves for the islands at noon, laundry is done "
                "overnight; dogs are welcome, and the spa has a sauna and a steam room."
            ),
        ),
        "castle": (
            "Castle Lane Inn",
            (
                "A quiet inn beside the castle walls, with a garden terrace, free parking and a "
                "library of local history books. Breakfast is cooked to order."
            ),
        ),
        "station": (
            "The Station Rooms",
            (
                "Minutes from the central station, with soundproofed rooms, late check-in and a "
                "rooftop bar. Rooms have kitchenettes."
            ),
        ),
        "farm": (
            "Meadow Farm Lodge",
            (
                "A working farm with horses, chickens and sheep; children can feed the animals "
                "every morning. Cottages sleep six."
            ),
        ),
        "seafront": (
            "Seafront Grand",
            (
                "A grand hotel on the promenade with a heated pool, a ballroom and sea views from "
                "every suite. Afternoon tea is served daily."
            ),
        ),
        "mill": (
            "Old Mill Guesthouse",
            (
                "A converted mill on the river with exposed beams, a wood-burning stove and "
                "walking trails from the door. Bicycles to borrow."
            ),
        ),
    }
    return [
        {
            "item_id": f"h-{key}",
            "title": title,
            "text": text,
            "metadata": {"stars": 3 + n % 3},
        }
        for n, (key, (title, text)) in enumerate(described.items())
    ]


def test_phrases_find_a_hotel_by_one_clause_of_its_long_description(
    client: TestClient[Any], minilm: Embedder
) -> None:
    catalog = hotels()
    upsert(client, catalog)
    context = "pet friendly"
    # No word in common with "dogs are welcome"; the rest of that long description draws the
    # hotel's embedding elsewhere.
    assert ids(ask(client, context, "keyword")) == []
    assert ids(ask(client, context, "vector"))[0] != "h-harbour"
    answer = ask(client, context, "phrases")
    assert ids(answer)[0] == "h-harbour"
    first = answer["recommendations"][0]
    assert set(first["sources"]) == {"phrases"}
    # The hotel scores the cosine of its nearest phrase.
    harbour = Item(**catalog[0])
    phrases = minilm.embed(list(harbour.phrases))
    query = minilm.embed([context])[0]
    assert first["score"] == pytest.approx(float(np.max(phrases @ query)), abs=2e-3)
    # Fused with every source, it ranks higher than the whole descriptions put it.
    fused, whole = ids(ask(client, context)), ids(ask(client, context, "vector"))
    assert fused.index("h-harbour") < whole.index("h-harbour")
    # A filter leaves it out when it must.
    four_stars = ask(client, context, "phrases", filters={"stars": 4})
    assert ids(four_stars)
    assert all(r["metadata"]["stars"] == 4 for r in four_stars["recommendations"])


# -- an index written before keyword search -------------------------------------------------


def test_an_index_built_before_keyword_search_is_upgraded_at_start_up(
    minilm: Embedder, settings: Settings, test_items: list[dict[str, Any]]
) -> None:
    app = create_app(settings, backends=Backends(embedder=minilm))
    with TestClient(app) as first:
        upsert(first, test_items)
        before = ids(ask(first, "time travel", "vector", top_k=6))
        phrases_before = ids(ask(first, "time travel", "phrases", top_k=6))
    legacy_from_current_index(settings.data_dir)

    with TestClient(create_app(settings, backends=Backends(embedder=minilm))) as upgraded:
        # The stored vectors were kept, keyword vectors added; only the phrases were encoded.
        distinct = {p for i in test_items for p in Item(**i).phrases}
        assert stats(upgraded)["encoder"]["texts"] == len(distinct)
        assert stats(upgraded)["index_points"] == len(test_items)
        assert ids(ask(upgraded, "coastal", "keyword")) == ["ro-2"]
        assert ids(ask(upgraded, "time travel", "vector", top_k=6)) == before
        assert ids(ask(upgraded, "time travel", "phrases", top_k=6)) == phrases_before
    index = QdrantEdgeIndex(settings.data_dir / INDEX_FOLDER, dimension=384, phrases=True)
    try:
        assert index.outdated() == []
    finally:
        index.close()


def legacy_from_current_index(data_dir: Path) -> None:
    """Replace the index in ``data_dir`` by one in the layout before keyword search."""
    path = data_dir / INDEX_FOLDER
    index = QdrantEdgeIndex(path, dimension=384)
    fingerprints = index.fingerprints()
    vectors = index.vectors(list(fingerprints))
    index.close()
    store = DuckDBStore(data_dir / "appliance.duckdb")
    try:
        stored = store.get_items(list(fingerprints))
    finally:
        store.close()
    shutil.rmtree(path)
    write_legacy_index(
        path,
        [
            IndexEntry(
                item_id,
                np.asarray(vectors[item_id]),
                fingerprints[item_id],
                stored[item_id].seq,
                stored[item_id].item.metadata,
            )
            for item_id in fingerprints
        ],
        dimension=384,
    )
