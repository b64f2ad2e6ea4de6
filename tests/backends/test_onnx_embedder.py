"""The ONNX Runtime encoder: the model's own vectors, from a graph derived once."""

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from appliance import model_files
from appliance.backends.embedders.onnx_runtime import OnnxEmbedder
from appliance.backends.embedders.protocol import Embedder
from appliance.backends.registry import DERIVED_DIR
from appliance.errors import ConfigError
from tests.conftest import EMBEDDER, MODELS_DIR

TEXTS = [
    "time travel",
    "Toy Story (1995), Adventure|Animation|Children|Comedy|Fantasy, pixar, fun",
    "",
    "Ünïcode, punctuation!? and    spaces, 日本語",
    "A very long text about many things, longer than the model's window. " * 60,
]


def test_gives_the_vectors_torch_gives(minilm: Embedder, minilm_torch: Embedder) -> None:
    assert minilm.name == minilm_torch.name
    assert minilm.dimension == minilm_torch.dimension
    np.testing.assert_allclose(minilm.embed(TEXTS), minilm_torch.embed(TEXTS), atol=1e-5)
    for text in TEXTS:
        np.testing.assert_allclose(minilm.embed([text]), minilm_torch.embed([text]), atol=1e-5)


def test_encodes_without_importing_torch(minilm: Embedder) -> None:
    # transformers' tokenizer would import torch: hundreds of MB in a process that never uses it.
    del minilm  # its graph, derived by the fixture, is what the process below loads
    script = textwrap.dedent(
        f"""
        import sys
        from appliance import model_files
        from appliance.backends.embedders.onnx_runtime import OnnxEmbedder
        from pathlib import Path

        models = Path({str(MODELS_DIR)!r})
        embedder = OnnxEmbedder(
            model_files.require(models, {EMBEDDER!r}),
            models / {DERIVED_DIR!r},
            name={EMBEDDER!r},
        )
        print(embedder.embed(["time travel"]).shape)
        print(sorted(m for m in ("torch", "transformers") if m in sys.modules))
        """
    )
    done = subprocess.run(  # noqa: S603 - the script above
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    )
    assert done.stdout.split("\n")[:2] == ["(1, 384)", "[]"]


@pytest.mark.slow
def test_derives_its_graph_once(tmp_path: Path, minilm: Embedder) -> None:
    model = model_files.require(MODELS_DIR, EMBEDDER)
    first = OnnxEmbedder(model, tmp_path, name=EMBEDDER)
    (graph,) = tmp_path.glob("*.onnx")
    derived_at = graph.stat().st_mtime_ns

    again = OnnxEmbedder(model, tmp_path, name=EMBEDDER)

    assert list(tmp_path.glob("*.onnx")) == [graph]
    assert graph.stat().st_mtime_ns == derived_at
    assert graph.name.startswith(f"{EMBEDDER}-")
    np.testing.assert_allclose(again.embed(TEXTS), first.embed(TEXTS), atol=1e-6)
    np.testing.assert_allclose(again.embed(TEXTS), minilm.embed(TEXTS), atol=1e-6)


def test_refuses_a_model_it_would_encode_differently(tmp_path: Path) -> None:
    model = tmp_path / "model"
    shutil.copytree(model_files.require(MODELS_DIR, EMBEDDER), model)
    pooling = model / "1_Pooling" / "config.json"
    config = json.loads(pooling.read_text())
    config |= {"pooling_mode_mean_tokens": False, "pooling_mode_cls_token": True}
    pooling.write_text(json.dumps(config))

    with pytest.raises(ConfigError, match=r"runtime = 'torch'"):
        OnnxEmbedder(model, tmp_path / "derived", name=EMBEDDER)
    assert not (tmp_path / "derived").exists()
