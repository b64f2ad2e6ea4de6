import uuid

import pytest

from appliance.domain import (
    MAX_PHRASES,
    InteractionType,
    Item,
    interaction_weight,
    point_id,
    rating_signal,
)

T = InteractionType


@pytest.mark.parametrize(
    ("kind", "rating", "neutral", "expected"),
    [
        (T.LIKE, None, 2.5, 1.0),
        (T.DISLIKE, None, 2.5, -1.0),
        (T.SKIP, None, 2.5, -0.5),
        (T.VIEW, None, 2.5, 0.25),
        (T.CLICK, None, 2.5, 0.5),
        (T.WATCHED, None, 2.5, 0.75),
        (T.PURCHASE, None, 2.5, 1.0),
        (T.RATING, 5.0, 2.5, 1.0),
        (T.RATING, 0.0, 2.5, -1.0),
        (T.RATING, 2.5, 2.5, 0.0),
        (T.RATING, 3.0, 3.0, 0.0),
        (T.RATING, 4.0, 2.5, 0.6),
        (T.RATING, 1.0, 2.5, -0.6),
        (T.RATING, 5.0, 4.0, 1.0),
        (T.RATING, 2.0, 4.0, -0.5),
        (T.WATCHED, 1.0, 2.5, 0.75 * -0.6),
        (T.WATCHED, 5.0, 2.5, 0.75),
        (T.VIEW, 0.0, 2.5, -0.25),
        # Like, dislike and skip keep their direction whatever rating comes with them.
        (T.LIKE, 0.0, 2.5, 1.0),
        (T.DISLIKE, 5.0, 2.5, -1.0),
        (T.SKIP, 5.0, 2.5, -0.5),
    ],
)
def test_interaction_weight(
    kind: InteractionType, rating: float | None, neutral: float, expected: float
) -> None:
    assert interaction_weight(kind, rating, neutral) == pytest.approx(expected, abs=1e-12)


def test_watched_with_a_low_rating_is_negative() -> None:
    assert interaction_weight(T.WATCHED, 1.0, 2.5) < 0.0


def test_every_interaction_has_a_weight() -> None:
    for kind in InteractionType:
        weight = interaction_weight(kind, None, 2.5)
        assert -1.0 <= weight <= 1.0
        assert weight != 0.0


def test_rating_signal_is_monotonic_and_bounded() -> None:
    ratings = [r / 2 for r in range(11)]
    signals = [rating_signal(r, 2.5) for r in ratings]
    assert signals == sorted(signals)
    assert signals[0] == -1.0
    assert signals[-1] == 1.0


def test_point_id_is_deterministic_and_distinct() -> None:
    assert point_id("item-1") == point_id("item-1")
    assert isinstance(point_id("item-1"), uuid.UUID)
    ids = [f"item-{i}" for i in range(1000)] + ["", "Item-1", "item-1 ", "ü"]
    assert len({point_id(i) for i in ids}) == len(ids)


def test_point_id_is_stable_across_releases() -> None:
    # Existing indexes hold these ids: the namespace must never change.
    assert point_id("item-1") == uuid.uuid5(
        uuid.UUID("6f1c2a4e-3b7d-5e0f-9a81-2c4d6e8f0a1b"), "item-1"
    )


def test_content_hash_follows_title_and_text_only() -> None:
    item = Item("a", "Dune", "A desert planet.", {"genre": "sf"})
    assert item.content_hash == Item("a", "Dune", "A desert planet.", {"genre": "sf"}).content_hash
    assert item.content_hash != Item("a", "Dune II", "A desert planet.").content_hash
    assert item.content_hash != Item("a", "Dune", "An ocean planet.").content_hash
    # Metadata and the id do not change what is embedded.
    assert item.content_hash == Item("a", "Dune", "A desert planet.", {"genre": "x"}).content_hash
    assert item.content_hash == Item("a", "Dune", "A desert planet.").content_hash
    assert item.content_hash == Item("b", "Dune", "A desert planet.").content_hash


def test_embedding_text_joins_title_and_text() -> None:
    assert Item("a", "Dune", "A desert planet.").embedding_text == "Dune. A desert planet."
    assert Item("a", "Dune", "").embedding_text == "Dune"
    assert Item("a", "Dune", "").content_hash != Item("a", "Dune", "x").content_hash


def test_phrases_are_the_title_and_the_clauses_of_the_text() -> None:
    item = Item(
        "a",
        "Cordless Drill 30X",
        "Drills wood, metal and masonry; two batteries. Part ZQ-1,000.5! Keywords: torque, wood",
    )
    assert item.phrases == (
        "Cordless Drill 30X",
        "Drills wood",
        "metal and masonry",
        "two batteries",
        "Part ZQ-1,000.5",  # no break without a space after the mark
        "Keywords: torque",
        "wood",
    )
    assert Item("a", "Dune", "").phrases == ("Dune",)
    # Each phrase once, the title first, at most MAX_PHRASES.
    assert Item("a", "Dune", "Sand, sand, spice. dune.").phrases == ("Dune", "Sand", "spice")
    long = Item("a", "T", ", ".join(f"clause {n}" for n in range(40)))
    assert len(long.phrases) == MAX_PHRASES
    assert long.phrases[:2] == ("T", "clause 0")
