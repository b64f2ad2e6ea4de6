from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np

from appliance.backends.embedders.protocol import Vectors

_TOKEN = re.compile(r"[a-z0-9]+")


class HashingEmbedder:
    """Deterministic bag-of-words vectors from hashed tokens.

    Texts that share words get similar vectors, which is all the service tests need; it loads
    in no time and needs no model files. It is not meant for real catalogs.
    """

    def __init__(self, dimension: int = 384) -> None:
        self.name = f"hashing-{dimension}"
        self.dimension = dimension

    def embed(self, texts: Sequence[str]) -> Vectors:
        """Encode texts as normalised sums of one signed unit vector per token."""
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            for token in _TOKEN.findall(text.lower()):
                digest = hashlib.blake2b(token.encode(), digest_size=8).digest()
                slot = int.from_bytes(digest[:4], "little") % self.dimension
                out[row, slot] += 1.0 if digest[4] & 1 else -1.0
            norm = float(np.linalg.norm(out[row]))
            if norm > 0:
                out[row] /= norm
            else:
                # An empty text still needs a valid unit vector.
                out[row, 0] = 1.0
        return out

    def close(self) -> None:
        """Nothing to release."""
