"""Latency of one re-rank call: ten demo-catalog candidates, a short request, one call at a time.

Measures the re-rankers themselves, without retrieval: the in-process llama.cpp one and, given
``--openai-url``, an OpenAI-compatible server (``scripts/with-llama-server.sh`` starts llama.cpp's
own on loopback). Candidates and requests are drawn with a fixed seed, so runs are comparable.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
from pathlib import Path

from appliance import model_files
from appliance.backends.rerankers.llamacpp import LlamaCppReranker
from appliance.backends.rerankers.openai import OpenAIReranker
from appliance.backends.rerankers.protocol import RerankCandidate, Reranker
from appliance.demo import MOVIELENS_CATALOG

WARM_UP = 3  # calls not counted: the first ones fill caches
REQUESTS = [
    "something funny for a family movie night",
    "a tense heist thriller",
    "films about time travel",
    "I loved Alien, anything like it?",
    "a romantic comedy set in New York",
    "animated movies for small kids",
    "a war movie based on a true story",
    "dark detective noir",
    "feel-good sports drama",
    "a scary haunted house film",
]


def _candidates(count: int, rng: random.Random) -> list[RerankCandidate]:
    lines = MOVIELENS_CATALOG.read_text(encoding="utf-8").splitlines()
    items = [json.loads(line) for line in rng.sample(lines, count)]
    return [RerankCandidate(i["item_id"], i["title"], i["text"]) for i in items]


async def _measure(reranker: Reranker, calls: int, candidates: int) -> dict[str, float]:
    rng = random.Random(7)  # noqa: S311 - a reproducible sample, not a secret
    timings = []
    for n in range(WARM_UP + calls):
        batch = _candidates(candidates, rng)
        started = time.perf_counter()
        await reranker.rerank(REQUESTS[n % len(REQUESTS)], batch, deadline=time.monotonic() + 60)
        if n >= WARM_UP:
            timings.append((time.perf_counter() - started) * 1000)
    percentiles = statistics.quantiles(timings, n=20)
    return {
        "calls": calls,
        "candidates": candidates,
        "p50_ms": round(statistics.median(timings), 1),
        "p95_ms": round(percentiles[-1], 1),
        "max_ms": round(max(timings), 1),
    }


async def main() -> None:
    """Measure each re-ranker and write the figures as JSON."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--candidates", type=int, default=10)
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument("--model", default="SmolLM2-135M-Instruct")
    parser.add_argument("--openai-url", help="base URL of an OpenAI-compatible API (…/v1)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/rerank.json"))
    args = parser.parse_args()

    results = {}
    local = LlamaCppReranker(model_files.require(args.models_dir, args.model))
    try:
        results["llamacpp"] = await _measure(local, args.calls, args.candidates)
    finally:
        await local.close()
    if args.openai_url:
        remote = OpenAIReranker(args.openai_url, "default")
        try:
            results["openai"] = await _measure(remote, args.calls, args.candidates)
        finally:
            await remote.close()
    for name, figures in results.items():
        print(f"{name:10} {json.dumps(figures)}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2), encoding="utf-8")


if __name__ == "__main__":
    asyncio.run(main())
