"""Single-request latency of POST /recommendations against a running appliance.

Sends requests one at a time over a kept-alive HTTP connection and reports the median and
tail latency of three kinds of request: a new context each time, a known user without
context, and a cold-start user. Run it against the demo (`just demo`, then `just latency`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import httpx

WORDS = [
    "time",
    "travel",
    "space",
    "heist",
    "romance",
    "war",
    "family",
    "robots",
    "ghosts",
    "detective",
    "music",
    "sports",
    "school",
    "dragons",
    "pirates",
    "zombies",
    "spies",
    "friendship",
    "revenge",
    "survival",
    "comedy",
    "mystery",
    "islands",
    "trains",
    "aliens",
    "magic",
    "cooking",
    "dance",
    "boxing",
    "chess",
    "vampires",
    "politics",
    "prison",
    "desert",
    "jungle",
    "ocean",
]


def measure(client: httpx.Client, bodies: list[dict[str, object]]) -> list[float]:
    """Return the latency in ms of each request, sent one after the other."""
    latencies = []
    for body in bodies:
        start = time.perf_counter()
        response = client.post("/recommendations", json=body)
        latencies.append((time.perf_counter() - start) * 1000)
        response.raise_for_status()
    return latencies


def summary(latencies: list[float]) -> dict[str, float]:
    """Median and tail percentiles in ms."""
    q = statistics.quantiles(latencies, n=100)
    return {
        "n": len(latencies),
        "p50_ms": round(statistics.median(latencies), 2),
        "p95_ms": round(q[94], 2),
        "p99_ms": round(q[98], 2),
    }


def main() -> None:
    """Run the three scenarios and print a JSON report."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--top-k", type=int, default=10)
    args = parser.parse_args()
    n = args.requests
    with httpx.Client(base_url=args.url, timeout=30) as client:
        items = client.get("/items", params={"limit": 20}).json()["items"]
        for item in items:
            client.post(
                "/feedback",
                json={
                    "user_id": "bench-user",
                    "item_id": item["item_id"],
                    "interaction_type": "like",
                },
            ).raise_for_status()
        # Distinct contexts: word pairs with a counter, never repeated.
        contexts = [
            f"{WORDS[i % len(WORDS)]} and {WORDS[(i * 7 + 3) % len(WORDS)]} {i}"
            for i in range(n + 20)
        ]
        measure(
            client, [{"user_id": "warm", "context": c, "top_k": args.top_k} for c in contexts[:20]]
        )
        report = {
            "context": summary(
                measure(
                    client,
                    [
                        {"user_id": f"u{i}", "context": c, "top_k": args.top_k}
                        for i, c in enumerate(contexts[20:])
                    ],
                )
            ),
            "known_user_no_context": summary(
                measure(client, [{"user_id": "bench-user", "top_k": args.top_k}] * n)
            ),
            "cold_start": summary(
                measure(client, [{"user_id": f"new-{i}", "top_k": args.top_k} for i in range(n)])
            ),
        }
        client.delete("/users/bench-user")
    print(json.dumps({"url": args.url, "top_k": args.top_k, **report}, indent=2))


if __name__ == "__main__":
    main()
