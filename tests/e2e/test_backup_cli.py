"""`appliance backup` and `appliance restore` end to end: against `appliance serve` processes with
keys configured, over HTTP, and on a data directory that no server holds."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import httpx
import pytest

from appliance import archive
from tests.conftest import MODELS_DIR, TEST_CATALOG
from tests.e2e.test_cli_and_server import run, server

ADMIN_KEY = "e2e-backup-admin-key"
CLIENT_KEY = "e2e-backup-client-key"
REQUESTS: list[dict[str, Any]] = [
    {"user_id": "visitor", "context": "time travel", "top_k": 5},
    {"user_id": "u1", "top_k": 5},
    {"user_id": "u2", "context": "a quiet meal", "top_k": 5},
    {"user_id": "u3", "top_k": 5, "filters": {"year": {"lt": 2010}}},
    {"user_id": "newcomer", "top_k": 5},
]


def keyed_env(data_dir: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "APPLIANCE_DATA_DIR": str(data_dir),
        "APPLIANCE_MODELS_DIR": str(MODELS_DIR),
        "APPLIANCE_AUTH__ADMIN_KEYS": "sha256:" + hashlib.sha256(ADMIN_KEY.encode()).hexdigest(),
        "APPLIANCE_AUTH__CLIENT_KEYS": CLIENT_KEY,
    }
    env.pop("APPLIANCE_ADMIN_KEY", None)
    return env


def answers(url: str) -> list[list[tuple[str, float]]]:
    out = []
    for body in REQUESTS:
        response = httpx.post(
            f"{url}/recommendations", json=body, headers={"X-API-Key": CLIENT_KEY}, timeout=30
        )
        assert response.status_code == 200, response.text
        out.append([(r["item_id"], r["score"]) for r in response.json()["recommendations"]])
    return out


def assert_same(
    after: list[list[tuple[str, float]]], before: list[list[tuple[str, float]]]
) -> None:
    for got, expected in zip(after, before, strict=True):
        assert [i for i, _ in got] == [i for i, _ in expected]
        assert [s for _, s in got] == pytest.approx([s for _, s in expected], abs=1e-5)


def stats(url: str) -> dict[str, Any]:
    response = httpx.get(f"{url}/stats", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_backup_and_restore_commands(tmp_path: Path) -> None:
    source_env = keyed_env(tmp_path / "source")
    backup = tmp_path / "backups" / "appliance.tar"
    backup.parent.mkdir()
    with server(source_env) as url:
        loaded = run(
            "ingest", str(TEST_CATALOG), env={**source_env, "APPLIANCE_ADMIN_KEY": ADMIN_KEY}
        )
        assert loaded.returncode == 0, loaded.stderr
        for user, item, kind in (
            ("u1", "sp-1", "like"),
            ("u1", "sp-2", "like"),
            ("u2", "ck-1", "purchase"),
            ("u2", "tt-1", "dislike"),
            ("u3", "ro-1", "watched"),
        ):
            response = httpx.post(
                f"{url}/feedback",
                json={"user_id": user, "item_id": item, "interaction_type": kind},
                headers={"X-API-Key": CLIENT_KEY},
            )
            assert response.status_code == 200, response.text
        before = answers(url)

        refused = run("backup", "--url", url, "-o", str(backup), env=source_env)
        assert refused.returncode == 2
        assert "(401)" in refused.stderr
        assert not backup.exists()

        made = run(
            "backup", "--url", url, "--admin-key", ADMIN_KEY, "-o", str(backup), env=source_env
        )
        assert made.returncode == 0, made.stderr
        assert f"backup written to {backup}" in made.stdout
        assert "checked): 36 items, 3 users, 5 feedback events" in made.stdout
        assert ADMIN_KEY not in made.stdout + made.stderr
        assert list(backup.parent.iterdir()) == [backup]

        # Into the appliance it came from: refused while the archive is being sent.
        again = run("restore", str(backup), "--url", url, "--admin-key", ADMIN_KEY, env=source_env)
        assert again.returncode == 2
        assert "(409)" in again.stderr
        assert "not empty (36 items, 3 users, 5 feedback events)" in again.stderr

    damaged = tmp_path / "damaged.tar"
    damaged.write_bytes(backup.read_bytes()[:-20_000])
    target_env = keyed_env(tmp_path / "target")
    with server(target_env) as url:
        refused = run(
            "restore", str(damaged), "--url", url, "--admin-key", ADMIN_KEY, env=target_env
        )
        assert refused.returncode == 2
        assert "damaged or truncated" in refused.stderr
        assert stats(url)["items"] == 0

        restored = run(
            "restore", str(backup), "--url", url, "--admin-key", ADMIN_KEY, env=target_env
        )
        assert restored.returncode == 0, restored.stderr
        assert ": 36 items, 3 users, 5 feedback events" in restored.stdout
        assert {
            k: stats(url)[k] for k in ("items", "users", "feedback_events", "index_points")
        } == {
            "items": 36,
            "users": 3,
            "feedback_events": 5,
            "index_points": 36,
        }
        assert_same(answers(url), before)

    # Without a server: straight into a new data directory, and a backup of it from its files.
    offline_env = keyed_env(tmp_path / "offline")
    offline = run("restore", str(backup), env=offline_env)
    assert offline.returncode == 0, offline.stderr
    assert ": 36 items, 3 users, 5 feedback events" in offline.stdout
    copy = tmp_path / "copy.tar"
    copied = run("backup", "-o", str(copy), env=offline_env)
    assert copied.returncode == 0, copied.stderr
    original, restored_copy = archive.read(backup), archive.read(copy)
    assert restored_copy.counts == original.counts
    # Every table and every item vector came back byte for byte.
    assert [m.sha256 for m in restored_copy.members] == [m.sha256 for m in original.members]
