"""Impressions, learned fusion and diversity through the HTTP API, on the real model, index and
database, with a generated catalog of household products (nothing about movies)."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from appliance.app import create_app
from appliance.backends.embedders.protocol import Embedder
from appliance.backends.registry import Backends
from appliance.settings import Settings
from tests.api.calls import feedback, ids, logged, recommend, similar, upsert
from tests.conftest import make_settings

PRODUCTS = {
    "kitchen": [
        "chef knife",
        "cutting board",
        "saucepan",
        "kettle",
        "spatula",
        "colander",
        "mixing bowl",
        "pepper mill",
        "toaster",
        "blender",
    ],
    "garden": [
        "spade",
        "rake",
        "watering can",
        "hose reel",
        "pruning shears",
        "wheelbarrow",
        "seed tray",
        "compost bin",
        "garden gloves",
        "lawn mower",
    ],
    "camping": [
        "tent",
        "sleeping bag",
        "camp stove",
        "headlamp",
        "backpack",
        "water filter",
        "trekking poles",
        "camp chair",
        "cooler box",
        "lantern",
    ],
    "office": [
        "desk lamp",
        "stapler",
        "notebook",
        "fountain pen",
        "desk organiser",
        "paper shredder",
        "monitor stand",
        "whiteboard",
        "filing cabinet",
        "office chair",
    ],
    # Added last, so the newest: nobody's picks below come from here.
    "bathroom": [
        "bath towel",
        "shower curtain",
        "soap dish",
        "toothbrush holder",
        "bath mat",
        "mirror cabinet",
        "towel rail",
        "laundry basket",
        "shower caddy",
        "toilet brush",
    ],
}
CONTEXTS = {
    "kitchen": "tools for cooking dinner",
    "garden": "equipment for my vegetable garden",
    "camping": "gear for a weekend in the mountains",
    "office": "things for my home office desk",
}
#: The same shoppers, asking by naming an item they have in mind.
NAMING = {
    "kitchen": "Anything like the Pepper Mill?",
    "garden": "Anything like the Pruning Shears?",
    "camping": "Anything like the Trekking Poles?",
    "office": "Anything like the Paper Shredder?",
}
#: What the judge of the learned fusion asks for: items no shopper before them picked.
JUDGED = "things for the bathroom"
BOTH = ["vector", "popularity"]
#: Popularity proposes its own list here (not a prior over vector's), so that each source has
#: candidates of its own for the fusion to weigh.
OWN_LISTS = {"sources": BOTH, "prior": False}


def products() -> list[dict[str, Any]]:
    return [
        {
            "item_id": f"{department}-{n}",
            "title": name.title(),
            "text": f"A {name} for the {department}, sturdy and easy to clean.",
            "metadata": {"department": department, "price": 10 + 3 * n},
        }
        for department, names in PRODUCTS.items()
        for n, name in enumerate(names)
    ]


def fusion_state(client: TestClient[Any]) -> dict[str, Any]:
    response = client.get("/admin/fusion")
    assert response.status_code == 200, response.text
    return response.json()


def train(client: TestClient[Any]) -> dict[str, Any]:
    response = client.post("/admin/fusion/train")
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture
def shop(open_client: Callable[[Settings], TestClient[Any]], tmp_path: Path) -> TestClient[Any]:
    client = open_client(
        make_settings(
            tmp_path / "data",
            recommend={"popularity_refresh_seconds": 0},
            fusion={"min_labelled_impressions": 12, "train_interval_seconds": 0},
        )
    )
    upsert(client, products())
    return client


def test_every_response_is_logged_with_all_its_candidates(shop: TestClient[Any]) -> None:
    answers = [
        recommend(shop, user_id="ann", context="tools for cooking dinner", top_k=3),
        recommend(shop, user_id="ann", top_k=2),  # cold start: popularity
        recommend(shop, user_id="bob", context="a tent", top_k=4, **OWN_LISTS),
    ]
    state = fusion_state(shop)
    assert state["impressions"]["logged"] == 3
    assert state["impressions"]["stored"] + state["impressions"]["pending"] == 3

    for answer in answers:
        impression = logged(shop, answer["request_id"])
        top_k = len(answer["recommendations"])
        assert impression["user_id"] == answer["user_id"]
        assert impression["top_k"] == top_k
        assert impression["strategy"] == answer["strategy"]
        assert impression["fusion"] == answer["fusion"] == "rrf"
        candidates = impression["candidates"]
        assert [c["position"] for c in candidates] == list(range(1, len(candidates) + 1))
        assert [c["item_id"] for c in candidates if c["shown"]] == ids(answer)
        # Every fused candidate is kept, not only the shown ones: each source's 2 x top_k, or
        # what a first page of recommend.first_page (10) results asks for when that is more.
        per_source = {s: 0 for c in candidates for s in c["source_ranks"]}
        for c in candidates:
            for source in c["source_ranks"]:
                per_source[source] += 1
        assert per_source == dict.fromkeys(per_source, max(2 * top_k, 20))
        for shown, item in zip(candidates, answer["recommendations"], strict=False):
            assert shown["source_ranks"] == item["source_ranks"]
            assert shown["sources"] == item["sources"]
            assert shown["fused_score"] == item["fused_score"]
    assert set(logged(shop, answers[2]["request_id"])["candidates"][0]["sources"]) <= set(BOTH)
    assert fusion_state(shop)["impressions"]["stored"] == 3
    assert fusion_state(shop)["impressions"]["candidate_rows"] == sum(
        len(logged(shop, a["request_id"])["candidates"]) for a in answers
    )

    missing = shop.get("/admin/impressions/no-such-request")
    assert missing.status_code == 404
    assert "no-such-request" in missing.json()["detail"]


def test_the_first_page_does_not_depend_on_how_many_are_asked(
    open_client: Callable[[Settings], TestClient[Any]], tmp_path: Path
) -> None:
    page = 3
    shop = open_client(
        make_settings(
            tmp_path / "data",
            recommend={"popularity_refresh_seconds": 0, "first_page": page},
            cache={"results": 0},
        )
    )
    upsert(shop, products())
    # Popular items far from the words, and a shopper with a history: every source has a list.
    for n in range(6):
        for item in ("office-2", "garden-5", "kitchen-9", f"camping-{n}"):
            feedback(shop, f"shopper-{n}", item, interaction_type="like")
    asked = [
        ("shopper-0", "gear for a weekend in the mountains"),
        ("new", "gear for a weekend in the mountains"),
        ("shopper-1", ""),
    ]
    for user, context in asked:
        answers = {
            top_k: recommend(shop, user_id=user, context=context, top_k=top_k)
            for top_k in (1, 2, 3, 5, 12, 30)
        }
        first = ids(answers[page])
        assert len(first) == page
        for top_k, answer in answers.items():
            assert ids(answer)[:page] == first[:top_k], (context, top_k)
        # Beyond the first page, a longer answer is what its own, longer lists fuse to: the
        # sources proposed more than for the first page, and the rest follow by fused score.
        longest = logged(shop, answers[30]["request_id"])["candidates"]
        assert len(ids(answers[30])) == 30
        assert max(r for c in longest for r in c["source_ranks"].values()) > 2 * page
        rest = [c["fused_score"] for c in longest[page:]]
        assert rest == sorted(rest, reverse=True)


def test_feedback_that_answers_an_impression_labels_its_candidates(shop: TestClient[Any]) -> None:
    answer = recommend(shop, user_id="cat", context="gear for a weekend in the mountains", top_k=3)
    first, second, third = ids(answer)
    request_id = answer["request_id"]
    unshown = next(c["item_id"] for c in logged(shop, request_id)["candidates"] if not c["shown"])
    feedback(shop, "cat", first, interaction_type="like", request_id=request_id)
    feedback(shop, "cat", second, interaction_type="dislike", request_id=request_id)
    # Without a request_id: the user's own later event on a candidate answers it too.
    feedback(shop, "cat", unshown, interaction_type="purchase")
    # Someone else naming this response does not answer it.
    feedback(shop, "dan", third, interaction_type="like", request_id=request_id)

    labels = {
        c["item_id"]: c["label"] for c in logged(shop, request_id)["candidates"] if "label" in c
    }
    assert labels == {first: 1.0, second: -1.0, unshown: 1.0}


def favour(
    client: TestClient[Any], source: str, impressions: int, contexts: dict[str, str] = CONTEXTS
) -> int:
    """Shoppers who, shown both sources' items, always pick ones ``source`` proposed (those
    only it proposed first), never one that only the other source proposed. They ask in the
    words of ``contexts``, a department's at a time.

    Returns:
        How many impressions they answered: the ones that showed items of both kinds.

    """
    # Popularity proposes only items with feedback once a request has words: a first shopper
    # likes one item of each department, so that it has something to propose from the start.
    for department in CONTEXTS:
        feedback(client, f"{source}-pioneer", f"{department}-9", interaction_type="like")
    departments = itertools.cycle(CONTEXTS)
    answered = 0
    for n in range(impressions):
        answer = recommend(
            client,
            user_id=f"{source}-fan-{n}",
            context=contexts[next(departments)],
            top_k=6,
            **OWN_LISTS,
        )
        shown = answer["recommendations"]
        chosen = sorted(
            (r for r in shown if source in r["source_ranks"]), key=lambda r: len(r["source_ranks"])
        )
        if not chosen or len(chosen) == len(shown):
            continue
        answered += 1
        for item in chosen[:2]:
            feedback(
                client,
                f"{source}-fan-{n}",
                item["item_id"],
                interaction_type="click",
                request_id=answer["request_id"],
            )
    return answered


@pytest.mark.parametrize(
    ("favoured", "other"), [("popularity", "vector"), ("vector", "popularity")]
)
def test_learned_weights_follow_what_users_pick(
    shop: TestClient[Any], favoured: str, other: str
) -> None:
    before = recommend(shop, user_id="judge", context=JUDGED, top_k=4, **OWN_LISTS)
    assert before["fusion"] == "rrf"
    assert "fusion_weights" not in before

    answered = favour(shop, favoured, impressions=20)
    trained = train(shop)

    assert answered >= 12
    assert trained["trainings"] == 1
    state = trained["kinds"]["context"]
    assert state["status"] == "trained", state["detail"]
    assert state["default"] == "learned"
    assert state["teaching_impressions"] == answered
    weights = state["weights"]
    assert set(weights) == set(BOTH)
    assert weights[favoured] > 1.0 > weights[other]
    assert state["validation_learned"] >= state["validation_rrf"]
    # Requests without words, or naming items, are other kinds: nothing taught them weights of
    # their own, so they borrow those learned from every kind's requests, here worded ones only.
    for kind in ("no-context", "named"):
        borrowed = trained["kinds"][kind]
        assert borrowed["status"] == "shared", borrowed["detail"]
        assert borrowed["default"] == "learned"
        assert borrowed["weights"] == weights
        assert "learned_weights" not in borrowed
    wordless = recommend(shop, user_id=f"{favoured}-fan-0", **OWN_LISTS)
    assert wordless["strategy"] == "preference"
    assert wordless["fusion"] == "learned"
    assert wordless["fusion_weights"] == weights

    def positions(answer: dict[str, Any], only: str) -> list[int]:
        """Where the candidates that only ``only`` proposed ended up, among all candidates."""
        candidates = logged(shop, answer["request_id"])["candidates"]
        found = [c["position"] for c in candidates if set(c["source_ranks"]) == {only}]
        assert found, candidates
        return found

    body = {"user_id": "judge", "context": JUDGED, "top_k": 4, **OWN_LISTS}
    plain = recommend(shop, **body, fusion="rrf")
    learned = recommend(shop, **body, fusion="learned")
    # The same request as ``before``: its kept answer went when the weights changed.
    default = recommend(shop, **body)
    # Plain RRF interleaves the two lists; learned fusion puts the favoured list first.
    assert plain["fusion"] == "rrf"
    assert min(positions(plain, other)) < max(positions(plain, favoured))
    assert learned["fusion"] == "learned"
    assert learned["fusion_weights"] == weights
    assert max(positions(learned, favoured)) < min(positions(learned, other))
    assert all(favoured in r["source_ranks"] for r in learned["recommendations"])
    assert ids(learned) != ids(plain)
    assert ids(default) == ids(learned)
    assert default["fusion"] == "learned"
    first = learned["recommendations"][0]
    assert first["fused_score"] == pytest.approx(
        sum(weights[s] / (60 + r) for s, r in first["source_ranks"].items()), abs=1e-6
    )


def test_requests_that_name_items_learn_weights_of_their_own(shop: TestClient[Any]) -> None:
    answered = favour(shop, "popularity", impressions=20, contexts=NAMING)
    trained = train(shop)

    assert answered >= 12
    named = trained["kinds"]["named"]
    assert named["status"] == "trained", named["detail"]
    assert named["teaching_impressions"] == answered
    assert named["weights"]["popularity"] > 1.0 > named["weights"]["vector"]
    # Worded requests that name nothing learned nothing of their own from them: until they do,
    # they borrow the weights learned from every kind's requests, here the naming ones.
    worded = trained["kinds"]["context"]
    assert worded["status"] == "shared", worded["detail"]
    assert "teaching_impressions" not in worded
    naming = recommend(
        shop, user_id="judge", context="Anything like the Soap Dish?", top_k=4, **OWN_LISTS
    )
    assert naming["fusion"] == "learned"
    assert naming["fusion_weights"] == named["weights"]
    assert logged(shop, naming["request_id"])["kind"] == "named"
    plain = recommend(shop, user_id="judge", context=JUDGED, top_k=4, **OWN_LISTS)
    assert plain["fusion"] == "learned"
    assert plain["fusion_weights"] == worded["weights"]
    assert logged(shop, plain["request_id"])["kind"] == "context"
    wordless = recommend(shop, user_id="judge", top_k=4, **OWN_LISTS)
    assert logged(shop, wordless["request_id"])["kind"] == "no-context"


def test_too_little_feedback_keeps_plain_rrf(
    open_client: Callable[[Settings], TestClient[Any]], tmp_path: Path
) -> None:
    client = open_client(
        make_settings(
            tmp_path / "data",
            recommend={"popularity_refresh_seconds": 0},
            fusion={"train_interval_seconds": 0.2},
        )
    )
    upsert(client, products())
    answered = favour(client, "vector", impressions=3)
    assert answered > 0

    def taught(state: dict[str, Any]) -> int:
        # Zero is a default, which the response omits.
        return int(state["kinds"]["context"].get("teaching_impressions", 0))

    # The schedule trains again and again on its own, taking in what arrives.
    deadline = time.monotonic() + 60
    state = fusion_state(client)
    while taught(state) < answered and time.monotonic() < deadline:
        time.sleep(0.2)
        state = fusion_state(client)
    assert taught(state) == answered
    assert state["trainings"] >= 1
    context = state["kinds"]["context"]
    # ... and finds too little to go on.
    assert context["status"] == "too-little-data"
    assert f"{answered} of the 100 impressions needed" in context["detail"]
    assert context["default"] == "rrf"
    assert "weights" not in context
    # What was learned is shown, though not used.
    assert set(context["learned_weights"]) == set(BOTH)

    asked = recommend(client, user_id="eve", context=CONTEXTS["garden"], fusion="learned")
    assert asked["fusion"] == "rrf"
    assert "fusion_weights" not in asked


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("fusion", "best", "rrf|learned"),
        ("fusion", 1, "Expected `str | null`"),
        ("diversity", 1.5, "<= 1.0"),
        ("diversity", -0.1, ">= 0.0"),
        ("diversity", "a lot", "Expected `float`"),
    ],
)
def test_fusion_and_diversity_are_validated(
    shop: TestClient[Any], field: str, value: Any, message: str
) -> None:
    response = shop.post(
        "/recommendations", json={"user_id": "u", "context": "a kettle", field: value}
    )
    assert response.status_code == 400, response.text
    [problem] = response.json()["extra"]
    assert problem["key"] == field
    assert message in problem["message"]


def test_diversity_spreads_out_near_duplicates(
    open_client: Callable[[Settings], TestClient[Any]], tmp_path: Path
) -> None:
    client = open_client(make_settings(tmp_path / "data"))
    lamps = [
        {
            "item_id": f"lamp-{n}",
            "title": f"Brass Desk Lamp, model {n}",
            "text": "A brass desk lamp with an adjustable arm and a warm LED bulb.",
        }
        for n in range(6)
    ]
    upsert(client, [*products(), *lamps])
    body = {"user_id": "fay", "context": "a brass desk lamp", "top_k": 5}

    def lamp_count(answer: dict[str, Any]) -> int:
        return sum(i.startswith("lamp-") for i in ids(answer))

    # A request for lamps, and more like one lamp: five lamps, or one or two among other goods.
    asked = {
        "recommend": lambda **more: recommend(client, **body, **more),
        "similar": lambda **more: similar(client, "lamp-0", top_k=5, **more),
    }
    for ask in asked.values():
        focused, varied = ask(), ask(diversity=0.7)
        assert lamp_count(focused) == 5
        assert ids(varied)[0] == ids(focused)[0]
        assert lamp_count(varied) <= 2
        assert varied["diversity"] == 0.7
        assert "diversify" in varied["timings_ms"]
        assert "diversity" not in focused
        assert "diversity" not in ask(diversity=0)
        assert "diversify" not in focused["timings_ms"]

    # The logged impression keeps the order the client saw.
    varied = asked["recommend"](diversity=0.7)
    assert [c["item_id"] for c in logged(client, varied["request_id"])["candidates"]][:5] == ids(
        varied
    )


def test_retention_keeps_the_newest_impressions(minilm: Embedder, tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", fusion={"max_impressions": 3})
    with TestClient(create_app(settings, backends=Backends(embedder=minilm))) as client:
        upsert(client, products())
        request_ids = [
            recommend(client, user_id=f"u{n}", context="a kettle")["request_id"] for n in range(5)
        ]
    # Shutting down wrote what waited; starting up applies the limits.
    with TestClient(create_app(settings, backends=Backends(embedder=minilm))) as client:
        state = fusion_state(client)
        assert state["impressions"]["stored"] == 3
        assert state["impressions"]["pruned"] == 2
        found = [client.get(f"/admin/impressions/{r}").status_code for r in request_ids]
        assert found == [404, 404, 200, 200, 200]


def test_deleting_a_user_deletes_their_impressions(shop: TestClient[Any]) -> None:
    answer = recommend(shop, user_id="gil", context="a kettle")
    feedback(shop, "gil", ids(answer)[0], interaction_type="like")
    kept = recommend(shop, user_id="hal", context="a kettle")["request_id"]

    assert shop.delete("/users/gil").status_code == 200

    assert shop.get(f"/admin/impressions/{answer['request_id']}").status_code == 404
    assert shop.get(f"/admin/impressions/{kept}").status_code == 200


def test_a_user_who_only_asked_can_be_deleted(shop: TestClient[Any]) -> None:
    asked = [recommend(shop, user_id="ida", context="a kettle")["request_id"] for _ in range(2)]
    assert shop.get("/users/ida").status_code == 404  # no feedback, no profile

    response = shop.delete("/users/ida")

    assert response.status_code == 200, response.text
    assert response.json() == {"user_id": "ida", "deleted_events": 0, "deleted_impressions": 2}
    assert [shop.get(f"/admin/impressions/{r}").status_code for r in asked] == [404, 404]
    assert shop.delete("/users/ida").status_code == 404
