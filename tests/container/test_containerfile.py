"""The Containerfile's promises, checked without a container engine (fast, for every CI run).

That the image really builds and serves is shown by ``just image`` and ``just run-image`` (see
README, Deploying / Container); these tests keep the file from drifting from the code: the
settings it sets exist, no key is baked in, the final stage runs unprivileged with its data in
one volume, and torch is the same CPU build as everywhere else.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from appliance.settings import load_settings

REPO = Path(__file__).resolve().parents[2]
CONTAINERFILE = REPO / "Containerfile"


def _instructions() -> list[list[tuple[str, str]]]:
    """Return the instructions of each stage as (INSTRUCTION, arguments), comments dropped."""
    stages: list[list[tuple[str, str]]] = [[]]
    logical = ""
    for raw in CONTAINERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not logical and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            logical += line[:-1] + " "
            continue
        logical += line
        keyword, _, args = logical.partition(" ")
        if keyword.upper() == "FROM":
            stages.append([])
        stages[-1].append((keyword.upper(), args.strip()))
        logical = ""
    return stages


def _final() -> list[tuple[str, str]]:
    return _instructions()[-1]


def _env(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, args in stage:
        if keyword == "ENV":
            for pair in shlex.split(args):
                name, _, value = pair.partition("=")
                env[name] = value
    return env


def _one(keyword: str) -> str:
    values = [args for k, args in _final() if k == keyword]
    assert len(values) == 1, f"the final stage should have one {keyword}, has {values}"
    return values[0]


def test_two_stages_on_the_same_base() -> None:
    froms = [args for stage in _instructions() for k, args in stage if k == "FROM"]
    assert froms == ["${BASE_IMAGE} AS builder", "${BASE_IMAGE}"]


def test_final_stage_runs_unprivileged_with_one_data_volume() -> None:
    user = _one("USER")
    assert user not in {"root", "0"}
    assert json.loads(_one("VOLUME")) == ["/data"]
    assert _one("EXPOSE") == "8000"
    assert _one("STOPSIGNAL") == "SIGTERM"
    assert json.loads(_one("ENTRYPOINT")) == ["appliance", "serve"]
    # USER comes after everything that needs root (creating the user, chown of /data).
    keywords = [k for k, _ in _final()]
    assert keywords.index("USER") > max(i for i, k in enumerate(keywords) if k in {"RUN", "COPY"})


def test_image_environment_is_valid_configuration() -> None:
    env = _env(_final())
    assert env["HF_HUB_OFFLINE"] == "1"
    appliance_env = {k: v for k, v in env.items() if k.startswith("APPLIANCE_")}
    settings = load_settings(environ=appliance_env)  # unknown or invalid keys raise
    assert settings.data_dir == Path("/data")
    assert settings.server.host == "0.0.0.0"  # noqa: S104 - the container's network is the point
    assert settings.server.port == 8000
    # The models are pulled into the folder the image's settings read them from.
    pulls = [args for k, args in _instructions()[-2] if k == "RUN" and "models pull" in args]
    assert pulls
    assert all(f"--models-dir {settings.models_dir}" in args for args in pulls)


def test_no_key_is_baked_into_the_image() -> None:
    for stage in _instructions():
        for keyword, args in stage:
            if keyword in {"ENV", "ARG", "LABEL"}:
                assert "AUTH__" not in args.upper(), args
                assert not re.search(r"(?i)(api|admin|client)_?keys?\s*=", args), args


def test_healthcheck_asks_health_without_curl() -> None:
    healthcheck = _one("HEALTHCHECK")
    command = json.loads(healthcheck[healthcheck.index("CMD") + 3 :].strip())
    assert command[:2] == ["python", "-c"]
    compile(command[2], "<healthcheck>", "exec")
    assert "/health" in command[2]


def test_torch_is_the_cpu_build_pinned_everywhere() -> None:
    containerfile = CONTAINERFILE.read_text(encoding="utf-8")
    install = (REPO / "scripts" / "install.sh").read_text(encoding="utf-8")
    lock = (REPO / "requirements.lock").read_text(encoding="utf-8")
    image_version = re.search(r"ARG TORCH_VERSION=(\S+)", containerfile)
    install_version = re.search(r'torch_version="([^"]+)"', install)
    lock_version = re.search(r"^torch==(\S+)$", lock, re.MULTILINE)
    assert image_version
    assert install_version
    assert lock_version
    assert image_version[1] == install_version[1] == lock_version[1]
    assert image_version[1].endswith("+cpu")


@pytest.mark.parametrize("ignore_file", [".containerignore", ".dockerignore"])
def test_build_context_admits_every_copied_path(ignore_file: str) -> None:
    lines = (REPO / ignore_file).read_text(encoding="utf-8").splitlines()
    admitted = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert "*" in lines, "the context should be an allow-list"
    for stage in _instructions():
        for keyword, args in stage:
            if keyword == "COPY" and not args.startswith("--from"):
                for source in args.split()[:-1]:
                    assert source.rstrip("/") in admitted, f"{source} is excluded by {ignore_file}"
