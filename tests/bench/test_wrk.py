"""The benchmark's wrk side: reading real wrk output, and the requests bench/scenario.lua sends
(real wrk against a small recording HTTP server)."""

from __future__ import annotations

import json
import re
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from bench import catalog, wrk

SAMPLES = Path(__file__).parents[1] / "data" / "wrk"


def sample(name: str) -> str:
    return (SAMPLES / name).read_text(encoding="utf-8")


def test_reads_a_real_run() -> None:
    result = wrk.parse(sample("repeated-c8.txt"))

    assert result.requests == 3075
    assert result.duration_s == pytest.approx(8.028368)
    assert result.error_count == 0
    assert result.succeeded == 3075
    # The script's exact figures agree with wrk's own rounded summary.
    assert result.reported_rate is not None
    assert result.rate == pytest.approx(result.reported_rate, abs=0.01)
    assert result.percentiles_ms["50"] == pytest.approx(8.926)
    assert result.percentiles_ms["95"] == pytest.approx(436.556)
    assert result.percentiles_ms["99.9"] == pytest.approx(788.514)
    assert result.reported_percentiles_ms is not None
    for p in ("50", "90", "99"):
        assert result.percentiles_ms[p] == pytest.approx(
            result.reported_percentiles_ms[p], abs=0.01
        )
    assert result.max_ms == pytest.approx(851.235)


def test_reads_error_counts_of_a_real_run() -> None:
    # Feedback on items that are not in the catalog: every answer is a 404.
    result = wrk.parse(sample("feedback-unknown-items-c4.txt"))

    assert result.requests > 0
    assert result.errors["status"] == result.requests == result.non_2xx
    assert result.succeeded == 0
    assert result.error_count == result.requests


def test_reads_timeouts_of_a_real_run() -> None:
    # Re-ranked requests at concurrency 32 with a one-second client timeout.
    result = wrk.parse(sample("rerank-timeouts-c32.txt"))

    assert result.errors["timeout"] == result.requests == 1
    assert result.error_count == 1
    # No answer came back in time, so there is no latency to report (rather than zeros).
    assert result.percentiles_ms == {}
    assert result.max_ms is None


def test_wrk_units_are_read_as_milliseconds() -> None:
    text = "  Latency Distribution\n     50%  812.00us\n     75%    1.50ms\n     99%    2.10s\n"
    assert wrk.summary_percentiles(text) == {"50": 0.812, "75": 1.5, "99": 2100.0}


def test_output_without_the_script_line_is_refused() -> None:
    text = "\n".join(
        line for line in sample("repeated-c8.txt").splitlines() if not line.startswith("BENCH")
    )
    with pytest.raises(wrk.WrkError, match="BENCH"):
        wrk.parse(text)


def test_command_line() -> None:
    load = wrk.Load("ingest", 3_000_000_000, 100_000, "run1-ingest-c8", Path("w.txt"),
                    Path("pool.jsonl"), 32)  # fmt: skip
    argv = wrk.command("http://127.0.0.1:8765", load, connections=8, duration_s=20, threads=4)

    assert argv[0] == "wrk"
    assert "--connections=8" in argv
    assert "--threads=4" in argv
    assert "--duration=20s" in argv
    assert "--latency" in argv
    assert f"--script={wrk.SCRIPT}" in argv
    separator = argv.index("--")
    assert argv[separator - 1] == "http://127.0.0.1:8765"
    assert argv[separator + 1 :] == [
        "ingest", "3000000000", "100000", "run1-ingest-c8", "w.txt", "pool.jsonl", "32",
    ]  # fmt: skip
    # Never more threads than connections.
    one = wrk.command("http://h", load, connections=1, duration_s=5, threads=4)
    assert "--threads=1" in one


class _Recorder(BaseHTTPRequestHandler):
    bodies: list[tuple[str, dict[str, Any]]]

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        self.bodies.append((self.path, json.loads(self.rfile.read(length))))
        self._answer()

    def do_GET(self) -> None:
        self.bodies.append((self.path, {}))
        self._answer()

    def _answer(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # wrk closes its connections mid-request when it stops; that is no error here.
        pass


@pytest.fixture
def recorder() -> Iterator[tuple[str, list[tuple[str, dict[str, Any]]]]]:
    """An HTTP server on loopback that answers 200 and keeps every request body."""
    assert shutil.which("wrk"), "wrk is not installed: run scripts/install-bench-tools.sh"
    bodies: list[tuple[str, dict[str, Any]]] = []
    handler = type("Handler", (_Recorder,), {"bodies": bodies})
    server = _QuietServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", bodies
    server.shutdown()
    server.server_close()


def send(
    url: str,
    tmp_path: Path,
    mode: str,
    *,
    first: int = 0,
    connections: int = 2,
    duration_s: float = 1,
    **extra: Any,
) -> wrk.WrkResult:
    words = tmp_path / "words.txt"
    words.write_text("\n".join(catalog.VOCABULARY) + "\n", encoding="utf-8")
    load = wrk.Load(mode, first, 5000, f"t-{mode}", words, **extra)
    result, _ = wrk.run(url, load, connections=connections, duration_s=duration_s, threads=2)
    return result


def test_unique_contexts_never_repeat(recorder: Any, tmp_path: Path) -> None:
    url, bodies = recorder
    result = send(url, tmp_path, "unique", first=1_000_000_000)
    # Requests in flight when wrk stops reach the server without being counted.
    assert result.requests <= len(bodies) <= result.requests + 2
    assert len(bodies) > 50

    contexts = [b["context"] for _, b in bodies]
    assert len(set(contexts)) == len(contexts)
    assert len({b["user_id"] for _, b in bodies}) == len(bodies)
    assert {p for p, _ in bodies} == {"/recommendations"}
    # Short contexts: four words of the vocabulary.
    for context in contexts:
        words = context.split()
        assert len(words) == 5
        assert words[2] == "and"
        assert set(words) - {"and"} <= set(catalog.VOCABULARY)


def test_repeated_contexts_are_a_hundred(recorder: Any, tmp_path: Path) -> None:
    url, bodies = recorder
    send(url, tmp_path, "repeated", connections=4, duration_s=2)

    # Enough draws that nearly all of the 100 have come up.
    assert len(bodies) > 300
    assert {b["user_id"] for _, b in bodies} == {"guest"}
    assert 90 <= len({b["context"] for _, b in bodies}) <= 100


def test_known_users_without_context(recorder: Any, tmp_path: Path) -> None:
    url, bodies = recorder
    send(url, tmp_path, "users")

    assert all(set(b) == {"user_id"} for _, b in bodies)
    numbers = {int(b["user_id"].removeprefix("bench-user-")) for _, b in bodies}
    assert numbers <= set(range(1000))
    assert len(numbers) > 50


def test_filters_name_one_of_the_catalog_categories(recorder: Any, tmp_path: Path) -> None:
    url, bodies = recorder
    send(url, tmp_path, "filtered", first=2_000_000_000)

    categories = {b["filters"]["category"] for _, b in bodies}
    assert categories == set(catalog.CATEGORIES)
    assert len({b["context"] for _, b in bodies}) == len(bodies)


def test_rerank_asks_for_the_stage(recorder: Any, tmp_path: Path) -> None:
    url, bodies = recorder
    send(url, tmp_path, "rerank", first=3_000_000_000)

    assert all(b["rerank"] is True and b["context"] for _, b in bodies)


def test_similar_asks_for_catalog_items_for_new_users(recorder: Any, tmp_path: Path) -> None:
    url, bodies = recorder
    result = send(url, tmp_path, "similar", first=4_000_000_000)

    assert result.requests <= len(bodies) <= result.requests + 2
    asked = [urlsplit(path) for path, _ in bodies]
    items = {a.path.removeprefix("/items/").removesuffix("/similar") for a in asked}
    # Ids of the catalog's 5,000 items, spread over it.
    assert all(re.fullmatch(r"item-\d{7}", i) and int(i[5:]) < 5000 for i in items)
    assert len(items) > len(asked) // 2
    users = [parse_qs(a.query)["user_id"][0] for a in asked]
    assert len(set(users)) == len(users)
    assert all(a.path.endswith("/similar") for a in asked)


def test_feedback_events_carry_ids_that_can_be_counted(recorder: Any, tmp_path: Path) -> None:
    url, bodies = recorder
    result = send(url, tmp_path, "feedback")

    ids = [b["request_id"] for _, b in bodies]
    assert len(ids) == len(set(ids))
    # What the durability check relies on: at least every counted event reached the server,
    # at most those plus the ones in flight when wrk stopped.
    assert result.requests <= len(ids) <= result.requests + 2
    assert all(i.startswith("t-feedback-") for i in ids)
    assert {p for p, _ in bodies} == {"/feedback"}
    for _, b in bodies:
        assert b["interaction_type"] in {"like", "click", "view", "dislike"}
        assert 0 <= int(b["item_id"].removeprefix("item-")) < 5000
        assert 0 <= int(b["user_id"].removeprefix("bench-fan-")) < 1000


def test_ingest_sends_new_items_in_batches(recorder: Any, tmp_path: Path) -> None:
    url, bodies = recorder
    pool = tmp_path / "pool.jsonl"
    items = list(catalog.generate(7))
    pool.write_text(
        "".join(json.dumps({k: v for k, v in i.items() if k != "item_id"}) + "\n" for i in items),
        encoding="utf-8",
    )
    send(url, tmp_path, "ingest", pool=pool, batch=3)

    sent = [item for _, b in bodies for item in b["items"]]
    assert all(len(b["items"]) == 3 for _, b in bodies)
    assert len({i["item_id"] for i in sent}) == len(sent)
    # The pool's texts and metadata, each with an id of its own.
    pooled = {json.dumps({k: v for k, v in i.items() if k != "item_id"}) for i in items}
    assert {json.dumps({k: v for k, v in i.items() if k != "item_id"}) for i in sent} == pooled
