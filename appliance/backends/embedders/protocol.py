from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt

Vectors = npt.NDArray[np.float32]


class Embedder(Protocol):
    """Encodes texts into L2-normalised vectors of a fixed dimension.

    Implementations are synchronous and may be slow; callers run them off the event loop and
    never call one from two threads at once.
    """

    name: str
    """Identifies the model; an index built with another name must be rebuilt."""
    dimension: int
    """Length of every vector returned."""

    def embed(self, texts: Sequence[str]) -> Vectors:
        """Encode a batch of texts.

        Args:
            texts: The texts, any number (callers bound batch sizes).

        Returns:
            A ``(len(texts), dimension)`` float32 array of unit-length rows.

        """
        ...

    def close(self) -> None:
        """Release the model's memory."""
        ...
