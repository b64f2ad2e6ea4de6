"""Finding catalog titles named in a request: forms, evidence, updates."""

from __future__ import annotations

import random

import pytest

from appliance.services.titles import Form, TitleDictionary, fold, title_forms

#: A catalog of films in MovieLens' spelling, mixed with everyday words used as titles, plus
#: unrelated items whose texts make everyday words common in the catalog.
MOVIES = [
    ("m-matrix", "Matrix, The", "A science fiction film about hackers."),
    ("m-alien", "Alien", "A science fiction horror film in space."),
    ("m-billy", "Billy Madison", "A comedy film about a man back in school."),
    ("m-seven", "Seven (a.k.a. Se7en)", "A crime thriller from 1995 about a killer."),
    ("m-leon", "Léon: The Professional (1994)", "A hitman takes in a girl."),
    ("m-time60", "The Time Machine", "A science fiction film from 1960."),
    ("m-time02", "The Time Machine", "A science fiction film from 2002."),
    ("m-it", "It", "A horror film from 2017 about a clown."),
    ("m-her", "Her", "A romance film about a voice."),
    ("m-up", "Up", "An animated film from 2009 about a flying house."),
    ("m-romance", "Romance", "A romance film."),
    ("m-amelie", "Amélie", "A romance comedy film from 2001, set in Paris."),
    ("m-shes", "She's All That", "A romance comedy film at school."),
    ("m-lotr2", "Lord of the Rings: The Two Towers, The", "A fantasy film."),
    ("m-lotr1", "Lord of the Rings: The Fellowship of the Ring, The", "A fantasy film."),
]
FILLER = [
    (f"f-{n}", f"Filler {n}", "A romance and drama film about love, life and what it was like.")
    for n in range(40)
]


@pytest.fixture
def titles() -> TitleDictionary:
    return TitleDictionary(MOVIES + FILLER)


def named(titles: TitleDictionary, text: str) -> list[tuple[str, ...]]:
    return [m.item_ids for m in titles.find(text)]


def test_fold_drops_case_accents_and_apostrophes() -> None:
    assert fold("Amélie") == fold("AMELIE") == "amelie"
    assert fold("She\u2019s") == fold("Shes") == "shes"


def test_title_forms() -> None:
    assert title_forms("Seven (a.k.a. Se7en)") == [(Form.TITLE, "Seven"), (Form.ALIAS, "Se7en")]
    assert title_forms("Heat (1995)") == [(Form.TITLE, "Heat")]
    assert title_forms("Matrix, The") == [(Form.TITLE, "Matrix, The"), (Form.ALIAS, "The Matrix")]
    assert title_forms("Léon: The Professional") == [
        (Form.TITLE, "Léon: The Professional"),
        (Form.SHORTENED, "Léon"),
    ]
    assert title_forms("Cry, the Beloved Country") == [(Form.TITLE, "Cry, the Beloved Country")]
    # Parentheses inside a title are part of it.
    assert title_forms("You Can (Not) Redo") == [(Form.TITLE, "You Can (Not) Redo")]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("something like Billy Madison", [("m-billy",)]),
        ("something like billy madison please", []),  # two lower-case words: too little
        ("I loved The Matrix and Alien.", [("m-matrix",), ("m-alien",)]),
        ("i loved the Matrix", [("m-matrix",)]),
        ("Seen Se7en? Or Seven (1995)?", [("m-seven",), ("m-seven",)]),
        ("anything like LÉON or amélie (2001)", [("m-leon",), ("m-amelie",)]),
        ("I liked Shes All That", [("m-shes",)]),
        ("I liked she's all that", [("m-shes",)]),  # three words, two long and rare
        ("The Lord of the Rings: The Two Towers was great", [("m-lotr2",)]),
        ("all the Lord of the Rings films", [("m-lotr2", "m-lotr1")]),
    ],
)
def test_finds_named_titles(titles: TitleDictionary, text: str, expected: list[tuple[str]]) -> None:
    assert named(titles, text) == expected


def test_a_remark_in_parentheses_picks_among_items_of_one_title(titles: TitleDictionary) -> None:
    assert named(titles, "like The Time Machine (2002)") == [("m-time02",)]
    assert named(titles, "like The Time Machine (1960)") == [("m-time60",)]
    assert named(titles, "like The Time Machine") == [("m-time60", "m-time02")]


@pytest.mark.parametrize(
    "text",
    [
        "It was great, I loved it and her voice. What is up?",
        "Her brother said It was fine",  # capital only at a sentence start, or a short word
        "Up for anything. It is late. Her choice.",
        "a good romance please",
        "I want a Romance tonight",  # a genre word many items use
        "the seven samurai",
        "the matrix of options",
        "Recommend movies for: time travel",
    ],
)
def test_ignores_everyday_words_that_are_also_titles(titles: TitleDictionary, text: str) -> None:
    assert named(titles, text) == []


def test_short_common_titles_need_a_remark_that_fits_the_item(titles: TitleDictionary) -> None:
    assert named(titles, "I loved It (2017) and Up (2009)") == [("m-it",), ("m-up",)]
    assert named(titles, "I liked it (a lot) and Up (1980)") == []


def test_follows_updates_renames_and_removals(titles: TitleDictionary) -> None:
    titles.update([("m-billy", "Happy Gilmore", "A comedy film about golf.")])
    assert named(titles, "like Billy Madison") == []
    assert named(titles, "like Happy Gilmore") == [("m-billy",)]
    titles.remove(["m-alien", "unknown"])
    assert named(titles, "like Alien (1979)") == []
    titles.update([("p-1", "Cordless Drill Pro 18V", "A power tool.")])
    assert named(titles, "something like the Cordless Drill Pro 18V") == [("p-1",)]
    assert len(titles) == len(MOVIES) + len(FILLER)


def test_replace_takes_over_another_dictionary(titles: TitleDictionary) -> None:
    titles.replace(TitleDictionary([("r-1", "Lemon Drizzle Cake", "Baking."), *FILLER]))
    assert named(titles, "like Billy Madison") == []
    assert named(titles, "a Lemon Drizzle Cake") == [("r-1",)]


def test_a_form_shared_by_many_items_names_none() -> None:
    titles = TitleDictionary(
        [(f"h-{n}", f"Hamlet: Version {n}", "A drama.") for n in range(5)]
        + [("h-one", "Hamlet Goes Business", "A comedy.")]
    )
    assert named(titles, "something like Hamlet") == []
    assert named(titles, "like Hamlet: Version 3") == [("h-3",)]


def test_large_catalog_lookup_is_a_dictionary_probe() -> None:
    rng = random.Random(7)
    syllables = ["ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "ze", "po"]
    catalog = [
        (
            f"g-{n}",
            " ".join(
                "".join(rng.choices(syllables, k=3)).capitalize() for _ in range(rng.randint(1, 4))
            ),
            "",
        )
        for n in range(20_000)
    ]
    titles = TitleDictionary(catalog)
    item_id, title, _ = catalog[12_345]
    found = {i for m in titles.find(f"Something like {title} (again)") for i in m.item_ids}
    assert item_id in found


def test_find_now_answers_as_find_does_unless_an_update_holds_the_titles(
    titles: TitleDictionary,
) -> None:
    text = "something like The Matrix or Toy Story, please"
    assert titles.find_now(text) == titles.find(text)
    assert titles.find_now(text)
    # What an update holds while it changes the entries.
    with titles._lock:
        assert titles.find_now(text) is None
    assert titles.find_now(text) == titles.find(text)
