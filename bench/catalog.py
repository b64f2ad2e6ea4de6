"""A synthetic catalog for benchmarks: any size, the same every time, shaped like the demo's.

Each title and text is a demo-catalog title or text (drawn with a fixed seed) whose words are
replaced by words from a generic vocabulary, keeping its punctuation and numbers: the embedder
sees texts of the demo's length and shape without the benchmark depending on any one domain.
Metadata has a category (one of 20, for filters that keep ~5% of the catalog), a year, a price
and tags.

    python bench/catalog.py --items 100000 --out bench/results/catalog-100k.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
from collections.abc import Iterator
from pathlib import Path

from appliance.demo import MOVIELENS_CATALOG
from appliance.domain import Item

SEED = 20261126
CATEGORIES = [f"category-{n:02d}" for n in range(20)]
VOCABULARY = """
able active adventure after air album amber ancient angle animal answer apple april arch
area arm army art autumn avenue baby back balance ball band bank bare basket battle beach bean
bear beauty bed bell belt bench berry bicycle bird birth black blade blanket blue board boat
body bold bone book border bottle bowl box brave bread bridge bright brother brown brush
budget building burn butter button cabin cable cake calm camera camp canal candle canvas cap
captain card care carpet castle cat cave cedar center chain chair chalk chance chapter charm
chart cheese cherry chess chest child circle city clay clean cliff clock cloud coast coat
coffee coin cold collar colour comet compass copper coral corner cotton country courage cousin
crane cream creek crew crown crystal cup curtain cushion dance danger dark dawn day deck deep
desert desk detail diamond diary dinner distance doctor dog door dragon drawer dream dress
drum dust eagle early earth east echo edge egg electric elm engine escape evening event
fabric face factory fair falcon family farm fast feather fence field film finger fire fish
flag flame flight floor flower fog folk forest fork fountain fox frame fresh friend frost
fruit game garden gate gentle giant gift glass globe glove gold grain grass gravel green grey
guitar hall hammer harbor harvest hat hawk heart heavy hedge helmet herb hero hidden hill
history hollow home honey hope horizon horse house hunter ice idea image iron island ivory
jacket jar jewel journey judge juice jungle kettle key king kitchen kite knife knot lake lamp
land lantern large laser leaf leather lemon letter library light lily linen lion liquid
little lock long lunar machine magic maple map marble market mask meadow melody memory metal
middle midnight milk mill mineral mirror mist modern moon morning mountain mouse music narrow
nature needle nest net night noble north note ocean olive orange orbit orchard owl paint
palace paper parade park path pearl pencil pepper piano picture pillow pine planet plate
pocket poem pond portrait potato powder prairie prince puzzle quiet rabbit radio rain river
road robot rock roof room rope rose round ruby saddle sail salt sand satin school science
screen sea season secret seed shadow shelf shell ship shore silent silk silver simple sky
slate smoke snow soft soil song sound south space spark spice spirit spring square stage star
station steel stone storm story street string summer sun swift table tail tea temple thread
thunder tiger timber tower town track trail train travel treasure tree tribe tulip tunnel
valley velvet village violet voice wagon wall water wave west whale wheel whisper white wild
willow wind window winter wire wolf wood wool world yellow young zero
""".split()  # noqa: SIM905 - a word list reads better as text


_WORD = re.compile(r"[^\W\d_]+")


def _demo_shapes() -> list[tuple[str, str]]:
    items = map(json.loads, MOVIELENS_CATALOG.read_text(encoding="utf-8").splitlines())
    return [(item["title"], item["text"]) for item in items]


def generate(count: int, seed: int = SEED) -> Iterator[dict[str, object]]:
    """Yield ``count`` items in the wire format; the same ``seed`` gives the same catalog."""
    rng = random.Random(seed)  # noqa: S311 - reproducible data, not a secret
    shapes = _demo_shapes()

    def reword(text: str) -> str:
        return _WORD.sub(lambda _: rng.choice(VOCABULARY), text).capitalize()

    for n in range(count):
        title, text = rng.choice(shapes)
        yield {
            "item_id": f"item-{n:07d}",
            "title": reword(title),
            "text": reword(text),
            "metadata": {
                "category": CATEGORIES[n % len(CATEGORIES)],
                "year": 1950 + rng.randrange(75),
                "price": round(rng.uniform(1.0, 500.0), 2),
                "tags": rng.sample(VOCABULARY, 3),
            },
        }


def demo_texts(count: int = 2000) -> list[str]:
    """Return the first ``count`` demo-catalog items as the embedder sees them."""
    lines = MOVIELENS_CATALOG.read_text(encoding="utf-8").splitlines()[:count]
    return [Item(**i).embedding_text for i in map(json.loads, lines)]


def mean_tokens(texts: list[str]) -> float:
    """Mean MiniLM tokens per text (what the encoder's cost grows with)."""
    from transformers import AutoTokenizer  # noqa: PLC0415 - only for the report

    from appliance import model_files  # noqa: PLC0415

    tokenizer = AutoTokenizer.from_pretrained(
        str(model_files.require(Path("models"), "all-MiniLM-L6-v2"))
    )
    return statistics.fmean(len(tokenizer(t)["input_ids"]) for t in texts)


def main() -> None:
    """Write a catalog as JSON Lines and report its mean tokens per item next to the demo's."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sample: list[str] = []
    with args.out.open("w", encoding="utf-8") as out:
        for item in generate(args.items):
            out.write(json.dumps(item) + "\n")
            if len(sample) < 2000:  # noqa: PLR2004 - enough for a stable mean
                sample.append(Item(**item).embedding_text)
    demo = demo_texts()
    print(
        f"{args.items} items written to {args.out}; mean MiniLM tokens per item "
        f"{mean_tokens(sample):.1f} (demo catalog {mean_tokens(demo):.1f})"
    )


if __name__ == "__main__":
    main()
