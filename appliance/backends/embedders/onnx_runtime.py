"""A sentence-transformers model run by ONNX Runtime instead of torch.

The same weights, the same vectors (within float rounding), a fraction of the time for the short
texts requests carry: torch spends most of a one-text forward pass in Python around its kernels
(about 25 ms here for a ten-token context, against about 7 ms through ONNX Runtime).

The ONNX graph is derived from the model folder the first time it is needed: torch traces the
transformer once, and the graph is kept only if it reproduces the model's own vectors on probe
texts. It is stored under a name that carries the weights' digest, so another model or new
weights derive a graph of their own.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
from tokenizers import Tokenizer

from appliance.backends.embedders.protocol import Vectors
from appliance.cpus import quota_bound_cpus
from appliance.errors import ConfigError

#: The modules a model must consist of for this runtime: a transformer, mean pooling, and
#: normalisation (what all-MiniLM-L6-v2 and most sentence-transformers models are).
SUPPORTED_MODULES = (
    "sentence_transformers.models.Transformer",
    "sentence_transformers.models.Pooling",
    "sentence_transformers.models.Normalize",
)

#: Texts the derived graph must encode as the model does: short, padded beside a longer one,
#: and one longer than the model's window (truncated).
PROBES = (
    "time travel",
    "a quiet film about a family running a bakery in a small town, told over thirty years",
    "words " * 400,
)

#: Largest difference allowed between a vector of the graph and the model's own.
TOLERANCE = 1e-4

_WEIGHTS = "model.safetensors"
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class OnnxEmbedder:
    """A sentence-transformers model folder, encoded through ONNX Runtime."""

    def __init__(self, model_path: Path, cache_dir: Path, *, name: str, threads: int = 0) -> None:
        # Never reach for a hub (read when the libraries are imported): a missing file must
        # fail here, not download.
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
        import onnxruntime  # noqa: PLC0415 - only the server needs it

        _check_supported(model_path)
        config = _read_json(model_path / "sentence_bert_config.json")
        self._max_length = int(config.get("max_seq_length", 512))
        self._lower = bool(config.get("do_lower_case", False))
        graph = cache_dir / f"{name.replace('/', '_')}-{_digest(model_path)}.onnx"
        if not graph.exists():
            export(model_path, graph)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or quota_bound_cpus() or 0
        options.inter_op_num_threads = 1
        # Idle worker threads sleep instead of spinning: the event loop and the index share
        # these cores.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self._session = onnxruntime.InferenceSession(
                str(graph), options, providers=["CPUExecutionProvider"]
            )
            self._tokenizer = _tokenizer(model_path, self._max_length)
        except Exception as e:  # onnxruntime raises its own untyped errors for a bad file
            raise ConfigError(f"cannot load the encoder graph {graph}: {e}") from e
        self._wanted = [i.name for i in self._session.get_inputs()]
        self.name = name
        self.dimension: int = int(self._session.get_outputs()[0].shape[-1])

    def embed(self, texts: Sequence[str]) -> Vectors:
        """Encode texts into unit-length float32 rows."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        encodings = self._tokenizer.encode_batch(
            [t.lower() for t in texts] if self._lower else list(texts)
        )
        columns = {
            "input_ids": [e.ids for e in encodings],
            "attention_mask": [e.attention_mask for e in encodings],
            "token_type_ids": [e.type_ids for e in encodings],
        }
        feed = {k: np.asarray(columns[k], dtype=np.int64) for k in self._wanted}
        (tokens,) = self._session.run(["last_hidden_state"], feed)
        return _mean_normalised(tokens, feed["attention_mask"])

    def close(self) -> None:
        """Drop the session so its memory can be reclaimed."""
        del self._session


def export(model_path: Path, graph: Path) -> None:
    """Derive the ONNX graph of the model's transformer, checked against the model itself.

    Raises:
        ConfigError: The model cannot be traced, or the graph's vectors differ from the model's.

    """
    import onnxruntime  # noqa: PLC0415
    import torch  # noqa: PLC0415 - torch costs seconds to import; only the export needs it
    from sentence_transformers import SentenceTransformer  # noqa: PLC0415

    model = SentenceTransformer(str(model_path), device="cpu", local_files_only=True)
    transformer = cast("torch.nn.Module", model[0].auto_model)
    transformer.eval()
    sample = model.tokenize(list(PROBES[:2]))
    names = [n for n in _INPUTS if n in sample]

    class LastHiddenState(torch.nn.Module):
        """The transformer as a function of its token inputs, as the exporter wants it."""

        def __init__(self) -> None:
            super().__init__()
            self.transformer = transformer

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            hidden: torch.Tensor = self.transformer(
                **dict(zip(names, inputs, strict=True))
            ).last_hidden_state
            return hidden

    graph.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=graph.parent) as scratch:
        staged = Path(scratch) / graph.name
        try:
            # Tracing warns about every shape test it bakes in; the check below is what counts.
            with torch.inference_mode(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    LastHiddenState(),
                    tuple(sample[n] for n in names),
                    str(staged),
                    input_names=names,
                    output_names=["last_hidden_state"],
                    dynamic_axes={
                        n: {0: "batch", 1: "tokens"} for n in [*names, "last_hidden_state"]
                    },
                    opset_version=17,
                    dynamo=False,
                )
        except Exception as e:  # tracing fails in many ways, all of them "use torch instead"
            raise ConfigError(
                f"cannot derive an ONNX graph from {model_path}: {e}; "
                "set embedder.runtime = 'torch'"
            ) from e
        session = onnxruntime.InferenceSession(str(staged), providers=["CPUExecutionProvider"])
        expected = model.encode(list(PROBES), normalize_embeddings=True, convert_to_numpy=True)
        batch = model.tokenize(list(PROBES))
        feed = {n: batch[n].numpy().astype(np.int64) for n in names}
        (tokens,) = session.run(["last_hidden_state"], feed)
        found = _mean_normalised(tokens, feed["attention_mask"])
        error = float(np.abs(found - expected).max())
        if error > TOLERANCE:
            raise ConfigError(
                f"the ONNX graph derived from {model_path} differs from the model by {error:.2g}; "
                "set embedder.runtime = 'torch'"
            )
        staged.replace(graph)


def _tokenizer(model_path: Path, max_length: int) -> Tokenizer:
    """Return the model's fast tokenizer, truncating at ``max_length`` and padding to the longest.

    The ``tokenizers`` library reads the same tokenizer.json as transformers' fast tokenizer,
    without importing transformers, which imports torch: several hundred MB of memory that
    encoding through ONNX Runtime never uses.
    """
    tokenizer = Tokenizer.from_file(str(model_path / "tokenizer.json"))
    # The file's own settings (a fixed length of 128 for this model) give way to the model's
    # window and to padding a batch to its longest text, as sentence-transformers does.
    padding = tokenizer.padding or {}
    tokenizer.enable_truncation(max_length=max_length)
    tokenizer.enable_padding(
        pad_id=padding.get("pad_id", 0),
        pad_type_id=padding.get("pad_type_id", 0),
        pad_token=padding.get("pad_token", "[PAD]"),
    )
    return tokenizer


def _mean_normalised(tokens: Any, mask: Any) -> Vectors:
    weights = mask[..., None].astype(np.float32)
    summed = (tokens * weights).sum(axis=1)
    means = summed / np.maximum(weights.sum(axis=1), 1e-9)
    norms = np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)
    return np.asarray(means / norms, dtype=np.float32)


def _check_supported(model_path: Path) -> None:
    modules = tuple(m.get("type") for m in _read_json(model_path / "modules.json"))
    pooling = _read_json(model_path / "1_Pooling" / "config.json")
    modes = {k for k, v in pooling.items() if k.startswith("pooling_mode_") and v}
    mean_only = modes == {"pooling_mode_mean_tokens"}
    if modules != SUPPORTED_MODULES or not mean_only:
        raise ConfigError(
            f"the model in {model_path} is not a transformer with mean pooling and normalisation, "
            "which is what the onnx runtime runs; set embedder.runtime = 'torch'"
        )


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read {path}: {e}") from e


def _digest(model_path: Path) -> str:
    weights = model_path / _WEIGHTS
    if not weights.is_file():
        raise ConfigError(f"{model_path} has no {_WEIGHTS}, which the onnx runtime derives from")
    digest = hashlib.sha256()
    with weights.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    digest.update((model_path / "config.json").read_bytes())
    return digest.hexdigest()[:16]
