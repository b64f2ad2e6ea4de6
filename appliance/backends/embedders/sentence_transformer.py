from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from appliance.backends.embedders.protocol import Vectors
from appliance.cpus import quota_bound_cpus
from appliance.errors import ConfigError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer


class SentenceTransformerEmbedder:
    """A sentence-transformers model loaded from a folder under ``models/``."""

    def __init__(self, model_path: Path, *, name: str, threads: int = 0) -> None:
        # Never reach for a hub: a missing file must fail here, not download.
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
        import torch  # noqa: PLC0415 - torch costs seconds to import; only the server needs it
        from sentence_transformers import SentenceTransformer  # noqa: PLC0415

        if threads := threads or quota_bound_cpus() or 0:
            torch.set_num_threads(threads)
        try:
            self._model: SentenceTransformer = SentenceTransformer(
                str(model_path), device="cpu", local_files_only=True
            )
        except (OSError, ValueError) as e:
            raise ConfigError(f"cannot load the embedding model from {model_path}: {e}") from e
        self.name = name
        dimension = self._model.get_embedding_dimension()
        if dimension is None:
            raise ConfigError(f"the model in {model_path} does not say its embedding size")
        self.dimension: int = dimension

    def embed(self, texts: Sequence[str]) -> Vectors:
        """Encode texts into unit-length float32 rows."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = self._model.encode(
            list(texts),
            batch_size=max(len(texts), 1),
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)

    def close(self) -> None:
        """Drop the model so its memory can be reclaimed."""
        del self._model
