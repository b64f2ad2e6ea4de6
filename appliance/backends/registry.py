"""Maps the ``kind`` named in the settings to the factory that builds that backend."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from appliance import model_files
from appliance.backends.embedders.protocol import Embedder
from appliance.backends.indexes.protocol import VectorIndex
from appliance.backends.rerankers.protocol import Reranker
from appliance.backends.stores.duckdb_store import DuckDBStore
from appliance.errors import ConfigError
from appliance.settings import Settings

if TYPE_CHECKING:
    from qdrant_client import QdrantClient

T = TypeVar("T")

DATABASE_FILE = "appliance.duckdb"
INDEX_DIR = "index"
#: What the appliance derives from its model files once and keeps (the encoder's ONNX graph).
DERIVED_DIR = "derived"


@dataclass(slots=True)
class Backends:
    """The heavy objects the services run on; any left ``None`` are built from the settings."""

    embedder: Embedder | None = None
    index: VectorIndex | None = None
    store: DuckDBStore | None = None
    reranker: Reranker | None = None


def _sentence_transformers(settings: Settings) -> Embedder:
    path = model_files.require(settings.models_dir, settings.embedder.model)
    if settings.embedder.runtime == "onnx":
        from appliance.backends.embedders.onnx_runtime import OnnxEmbedder  # noqa: PLC0415

        return OnnxEmbedder(
            path,
            derived_dir(settings),
            name=settings.embedder.model,
            threads=settings.embedder.threads,
        )
    from appliance.backends.embedders.sentence_transformer import (  # noqa: PLC0415 - pulls torch
        SentenceTransformerEmbedder,
    )

    return SentenceTransformerEmbedder(
        path, name=settings.embedder.model, threads=settings.embedder.threads
    )


def derived_dir(settings: Settings) -> Path:
    """Return where files derived from the model files are kept.

    Beside the model files, or in the data directory when the models folder is read-only (as
    in the container image).
    """
    models = Path(settings.models_dir)
    if os.access(models, os.W_OK):
        return models / DERIVED_DIR
    return Path(settings.data_dir) / DERIVED_DIR


def _hashing(settings: Settings) -> Embedder:
    del settings
    from appliance.backends.embedders.hashing import HashingEmbedder  # noqa: PLC0415

    return HashingEmbedder()


def _per_model(embedder: Embedder) -> str:
    # One index per embedding model: switching models starts a fresh index that start-up fills
    # from the store, instead of mixing vectors from two models.
    return f"{embedder.name}-{embedder.dimension}".replace("/", "_")


def _qdrant_edge(settings: Settings, embedder: Embedder) -> VectorIndex:
    from appliance.backends.indexes.qdrant_edge import QdrantEdgeIndex  # noqa: PLC0415

    return QdrantEdgeIndex(
        settings.data_dir / INDEX_DIR / _per_model(embedder),
        dimension=embedder.dimension,
        hnsw_m=settings.index.hnsw_m,
        hnsw_ef_construct=settings.index.hnsw_ef_construct,
        hnsw_ef=settings.index.hnsw_ef,
        quantized=settings.index.quantized,
        precision=settings.index.precision,
        text_language=settings.index.text_language,
        segment_items=settings.index.segment_items,
        phrases=settings.index.phrases,
        search_threads=settings.index.search_threads,
    )


def _qdrant_server_client(settings: Settings) -> QdrantClient:
    from qdrant_client import QdrantClient  # noqa: PLC0415

    config = settings.index
    return QdrantClient(
        url=config.url,
        api_key=os.environ.get(config.api_key_env) or None,
        timeout=config.timeout_seconds,
    )


def _qdrant_server(settings: Settings, embedder: Embedder) -> VectorIndex:
    from appliance.backends.indexes.qdrant_server import QdrantServerIndex  # noqa: PLC0415

    config = settings.index
    client = _qdrant_server_client(settings)
    try:
        return QdrantServerIndex(
            client,
            f"{config.collection}-{_per_model(embedder)}",
            dimension=embedder.dimension,
            location=config.url,
            hnsw_m=config.hnsw_m,
            hnsw_ef_construct=config.hnsw_ef_construct,
            hnsw_ef=config.hnsw_ef,
            quantized=config.quantized,
            precision=config.precision,
            text_language=config.text_language,
            phrases=config.phrases,
            shards=config.shards,
            replicas=config.replicas,
        )
    except BaseException:
        client.close()
        raise


def _passthrough(settings: Settings) -> Reranker:
    del settings
    from appliance.backends.rerankers.passthrough import PassthroughReranker  # noqa: PLC0415

    return PassthroughReranker()


def _reranker_model(settings: Settings) -> Path:
    # A manifest entry's name, or any GGUF file the operator brings.
    named = settings.reranker.model
    if named.endswith(".gguf"):
        path = Path(named).expanduser()
        if not path.is_file():
            raise ConfigError(f"re-ranker model file {path} does not exist")
        return path
    return model_files.require(settings.models_dir, named)


def _llamacpp(settings: Settings) -> Reranker:
    try:
        from appliance.backends.rerankers.llamacpp import LlamaCppReranker  # noqa: PLC0415
    except ImportError:
        raise ConfigError(
            "the llamacpp re-ranker needs llama-cpp-python: install the llamacpp extra "
            "(scripts/install.sh llamacpp)"
        ) from None
    config = settings.reranker
    return LlamaCppReranker(
        _reranker_model(settings),
        threads=config.threads,
        item_tokens=config.item_tokens,
        context_tokens=config.context_tokens,
        max_candidates=config.max_candidates,
    )


def _openai(settings: Settings) -> Reranker:
    from appliance.backends.rerankers.openai import OpenAIReranker  # noqa: PLC0415

    config = settings.reranker
    return OpenAIReranker(
        config.base_url,
        config.api_model,
        api_key=os.environ.get(config.api_key_env) or None,
        concurrency=config.concurrency,
    )


EMBEDDERS: dict[str, Callable[[Settings], Embedder]] = {
    "sentence-transformers": _sentence_transformers,
    "hashing": _hashing,
}
INDEXES: dict[str, Callable[[Settings, Embedder], VectorIndex]] = {
    "qdrant-edge": _qdrant_edge,
    "qdrant-server": _qdrant_server,
}
RERANKERS: dict[str, Callable[[Settings], Reranker]] = {
    "none": _passthrough,
    "llamacpp": _llamacpp,
    "openai": _openai,
}


def _pick(family: str, registry: dict[str, T], kind: str) -> T:
    try:
        return registry[kind]
    except KeyError:
        known = ", ".join(sorted(registry))
        raise ConfigError(f"unknown {family} kind {kind!r}; installed: {known}") from None


def preflight(settings: Settings) -> None:
    """Check, cheaply and before anything loads, that the settings name usable backends.

    Raises:
        ConfigError: An unknown kind, a model file that is not in the models folder (the
            message names the command that fetches it), or a Qdrant server that does not answer.

    """
    _pick("embedder", EMBEDDERS, settings.embedder.kind)
    _pick("index", INDEXES, settings.index.kind)
    _pick("reranker", RERANKERS, settings.reranker.kind)
    if settings.embedder.kind == "sentence-transformers":
        model_files.require(settings.models_dir, settings.embedder.model)
    if settings.reranker.kind == "llamacpp":
        _reranker_model(settings)
    if settings.index.kind == "qdrant-server":
        from appliance.backends.indexes.qdrant_server import reach  # noqa: PLC0415

        client = _qdrant_server_client(settings)
        try:
            reach(client, settings.index.url)
        finally:
            client.close()


def build_embedder(settings: Settings) -> Embedder:
    """Build the embedder the settings name."""
    return _pick("embedder", EMBEDDERS, settings.embedder.kind)(settings)


def build_index(settings: Settings, embedder: Embedder) -> VectorIndex:
    """Build the vector index the settings name, sized for ``embedder``."""
    return _pick("index", INDEXES, settings.index.kind)(settings, embedder)


def build_reranker(settings: Settings) -> Reranker:
    """Build the re-ranker the settings name."""
    return _pick("reranker", RERANKERS, settings.reranker.kind)(settings)


def build_store(settings: Settings) -> DuckDBStore:
    """Open the system-of-record database in the data directory."""
    return DuckDBStore(Path(settings.data_dir) / DATABASE_FILE, cached_items=settings.cache.items)
