"""The appliance's configuration: one frozen tree, loaded once.

Sources, later ones winning: the defaults below, an optional TOML file, then environment
variables named ``APPLIANCE_<SECTION>__<FIELD>`` (``APPLIANCE_DATA_DIR``,
``APPLIANCE_SERVER__PORT``, ``APPLIANCE_RECOMMEND__CONTEXT_WEIGHT``). A list setting is given in
the environment as a JSON list or as comma-separated values (``APPLIANCE_AUTH__CLIENT_KEYS=a,b``).
Unknown keys are rejected in both, so a typo fails at start-up instead of being silently ignored.
"""

from __future__ import annotations

import os
import re
import tomllib
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from appliance.errors import ConfigError

ENV_PREFIX = "APPLIANCE_"
ENV_CONFIG_FILE = "APPLIANCE_CONFIG"
#: The key that admin commands and the dashboard send to a running server.
ADMIN_KEY_ENV = "APPLIANCE_ADMIN_KEY"
#: Variables of the clients, not settings of the server; they are not rejected as unknown.
_CLIENT_VARIABLES = frozenset({ENV_CONFIG_FILE, ADMIN_KEY_ENV, "APPLIANCE_URL"})

Fraction = Annotated[float, Meta(ge=0.0, le=1.0)]
PositiveInt = Annotated[int, Meta(ge=1)]
PositiveFloat = Annotated[float, Meta(gt=0.0)]


class _Section(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pass


class ServerSettings(_Section, frozen=True):
    """Where the HTTP server listens."""

    host: str = "127.0.0.1"
    """Interface to bind; 0.0.0.0 exposes the appliance to the network."""
    port: Annotated[int, Meta(ge=1, le=65535)] = 8000
    """TCP port of the HTTP API."""
    access_log: bool = False
    """Log a line per request; /metrics counts requests by route and status either way (a log
    line costs about 4% of the server's time under load)."""
    max_body_bytes: PositiveInt = 8 * 1024 * 1024
    """Largest request body accepted; a larger one is refused with 413 before it is read."""
    max_restore_bytes: PositiveInt = 4 * 1024 * 1024 * 1024
    """Largest backup archive POST /admin/restore accepts, instead of max_body_bytes (the archive
    is streamed to the data directory, never held in memory)."""
    request_timeout_seconds: Annotated[float, Meta(ge=0.0)] = 60.0
    """A request not answered within this gets 503 (its work still completes); 0 turns it off.
    /admin/reindex, /admin/users/rebuild and PUT /admin/reranker are exempt."""
    malloc_arenas: Annotated[int, Meta(ge=0)] = 2
    """Most glibc malloc arenas the server uses (fewer arenas, less memory held); 0 keeps glibc's
    default of eight per core. The environment variable MALLOC_ARENA_MAX, if set, wins."""
    rate_limit_per_minute: Annotated[int, Meta(ge=0)] = 0
    """Requests one API key (without keys: one client address) may send per minute, beyond which
    the answer is 429 with Retry-After; 0 turns the limit off. /health is never limited."""


class AuthSettings(_Section, frozen=True):
    """Who may call the API: keys sent as Authorization: Bearer <key> or X-API-Key: <key>."""

    client_keys: tuple[str, ...] = ()
    """Keys that may call POST /recommendations, GET /items/{item_id}/similar and POST
    /feedback: each the key itself or, better, sha256:HEX with HEX the key's SHA-256 digest, so
    that no key is stored in clear."""
    admin_keys: tuple[str, ...] = ()
    """Keys that may call every endpoint (catalog, users, listings, stats, metrics, admin); same
    forms as client_keys."""
    allow_unauthenticated: bool = False
    """Serve without keys on a non-loopback server.host (only behind a proxy that authenticates);
    without keys and without this, the appliance serves on loopback only."""


class EmbedderSettings(_Section, frozen=True):
    """The text encoder that turns items and contexts into vectors."""

    kind: str = "sentence-transformers"
    """Embedder backend: sentence-transformers (the real model) or hashing (tests only)."""
    model: str = "all-MiniLM-L6-v2"
    """Name of the model's entry in models/manifest.toml."""
    max_batch: PositiveInt = 16
    """Most texts encoded in one forward pass; concurrent requests share a batch up to this.
    Both runtimes encode the most texts a second at 8 to 32 (measured on catalog-length texts)."""
    runtime: Literal["onnx", "torch"] = "onnx"
    """What runs the sentence-transformers model: onnx (ONNX Runtime, on a graph derived from the
    model files once and kept beside them, or in the data directory if the models folder is
    read-only; the same vectors, about 3x faster on short texts) or torch."""
    threads: Annotated[int, Meta(ge=0)] = 0
    """Intra-op threads for encoding; 0 keeps the runtime's default (one per physical core),
    or fewer when the container's CPU quota allows less time."""


class IndexSettings(_Section, frozen=True):
    """The vector index that holds one vector per catalog item."""

    kind: str = "qdrant-edge"
    """Vector index backend: qdrant-edge (embedded, in the data directory) or qdrant-server (a
    collection on a Qdrant server or cluster at url)."""
    url: str = "http://127.0.0.1:6333"
    """qdrant-server: the server's REST URL (of any node of a cluster)."""
    collection: str = "appliance"
    """qdrant-server: the collection's name, to which the embedding model's name and dimension
    are appended (each model has a collection of its own). One appliance per collection: at
    start-up it deletes the points of items its store does not hold."""
    api_key_env: str = "QDRANT_API_KEY"
    """qdrant-server: the environment variable that holds the server's API key, if it needs one;
    the key itself never appears in the configuration."""
    timeout_seconds: PositiveInt = 30
    """qdrant-server: longest wait for one answer from the server."""
    shards: PositiveInt = 1
    """qdrant-server: shards of a new collection, which a cluster spreads over its nodes."""
    replicas: PositiveInt = 1
    """qdrant-server: copies a new collection keeps of each shard, each on another node of a
    cluster (2 keeps serving when a node is down)."""
    hnsw_m: PositiveInt = 16
    """HNSW graph degree: higher is more accurate and uses more memory."""
    hnsw_ef_construct: PositiveInt = 100
    """HNSW build-time beam width."""
    hnsw_ef: PositiveInt = 160
    """HNSW query-time beam width: higher is more accurate and slower."""
    quantized: bool = True
    """Search on an int8 copy of the vectors held in memory (a quarter of the float vectors'
    size), the best candidates rescored with the float vectors: faster for as accurate an answer
    (with hnsw_ef 160 against 128 without). A change applies to an existing index at the next
    start."""
    precision: Literal["float16", "float32"] = "float16"
    """How the vectors are stored for rescoring and graph building: float16 takes half the
    memory of float32 (0.7 GB against 1.5 GB at 1M items of 384 dimensions) and moves a cosine
    by less than 0.001. A new index takes it; an existing one keeps the precision it was
    written with until `appliance reindex` rebuilds it."""
    segment_items: Annotated[int, Meta(ge=14_000)] = 50_000
    """qdrant-edge: most items one search graph is built over: a bulk load builds a graph each
    time this many items were written, and segments merge up to this size. A graph's build time
    and memory grow faster than its size; a search visits every segment (20 at 1M items). A
    segment of fewer than 14,000 (10 MB of float16 vectors) is scanned instead."""
    phrases: bool = False
    """Keep a vector for each phrase of every item (its title and the sentences and clauses of
    its text) and offer the phrases source, which matches a request with an item's nearest
    phrase. On the evaluation data it raised the fused tags NDCG@10 from 0.068 to 0.082 and
    ReDial R@10 from 0.089 to 0.097 (tags 0.097 and ReDial 0.122 with recommend.prior_depth 6
    and recommend.first_page 20 too), for 1.45x the CPU of a request with words at 10,000 items
    and 3x at 100,000 (the three settings together: 5x at 100,000 items, under 3x at 10,000).
    At 100,000 items it slowed ingest 2.5x and added about 600 MB at peak. Turned on, an
    existing index has its items' phrases encoded at the next start."""
    search_threads: Annotated[int, Meta(ge=0)] = 0
    """qdrant-edge: threads that read the index's segments in parallel for one search; 0 is one
    per CPU the process may use (a container's CPU quota counts). The engine's own default
    (eight threads on a 2-core machine) took about a third more server CPU a request at
    concurrency 32 than one or two."""
    text_language: str = "english"
    """Language of the item texts for keyword (BM25) search: its stop words are ignored and
    words are reduced to their stem (english, french, german, ...); none keeps every word as
    written, for any language or a mix."""


class RerankerSettings(_Section, frozen=True):
    """The stage that reorders the fused candidates before the response."""

    kind: str = "none"
    """Re-ranker backend: none (keeps the retrieval order), llamacpp (a GGUF model in this
    process) or openai (any OpenAI-compatible chat-completions API)."""
    switchable: bool = True
    """PUT /admin/reranker may change the re-ranker at run time."""
    budget_ms: PositiveInt = 300
    """Time one request may spend re-ranking; past it the retrieval order is returned."""
    max_pending: PositiveInt = 4
    """Re-rank calls that may wait for the model at once; a request beyond them skips the stage."""
    max_candidates: Annotated[int, Meta(ge=1, le=64)] = 20
    """Most candidates re-ranked per request. A request re-ranks as many of the fused candidates
    as it retrieves from each source (top_k x recommend.candidate_factor: 10 for top_k 5), up to
    this many; the others keep their fused order after them."""
    model: str = "SmolLM2-135M-Instruct"
    """llamacpp: a models/manifest.toml entry, or the path of any GGUF file."""
    threads: Annotated[int, Meta(ge=0)] = 0
    """llamacpp: CPU threads for the model; 0 is one per CPU the process may use (a
    container's CPU quota counts)."""
    item_tokens: PositiveInt = 10
    """llamacpp: each candidate's title and text are cut to this many tokens (the cost per
    request grows with candidates x tokens), or fewer (down to 4) when the model's measured
    speed says that many would not fit the budget."""
    context_tokens: PositiveInt = 32
    """llamacpp: a longer request keeps its last this-many tokens."""
    base_url: str = "http://127.0.0.1:8080/v1"
    """openai: the API's base URL, up to and including /v1."""
    api_model: str = "default"
    """openai: the model name the API is asked for."""
    api_key_env: str = "OPENAI_API_KEY"
    """openai: the environment variable that holds the API key; the key itself never appears in
    the configuration."""
    concurrency: PositiveInt = 4
    """openai: candidates scored in parallel requests."""


class RecommendSettings(_Section, frozen=True):
    """How recommendation requests are answered."""

    context_weight: Fraction = 0.7
    """Share of the request context in the query vector when the user also has preferences."""
    candidate_factor: PositiveFloat = 2.0
    """Candidates retrieved per requested result, handed to the re-ranker."""
    first_page: PositiveInt = 10
    """Results that are the same whatever top_k asks for: a request for fewer or more asks
    each source for as many candidates as one for this many does (this x candidate_factor),
    and a longer answer continues with what its own, longer lists fuse to. More costs every
    request more (see the README's Quality section)."""
    prior_depth: PositiveInt = 3
    """For a request with words, the popularity prior ranks this many times as many of the
    matches of the sources that rank by resemblance to them (vector, keyword, phrases, named) as
    each proposes itself. Resemblance finds what fits the words, not which of the fitting items
    people want (BM25 gives many items the same score), so where those lists are cut says
    little; 1 ranks only the lists. 6 measured ReDial R@10 0.101 against 0.089 for about 30%
    more server CPU a request (see the README's Quality section)."""
    popularity_half_life_days: PositiveFloat = 30.0
    """Age at which a feedback event counts half towards an item's popularity."""
    popularity_refresh_seconds: Annotated[float, Meta(ge=0.0)] = 30.0
    """How long a computed popularity ranking is reused before it is recomputed."""
    history_examples: PositiveInt = 10
    """The history source recommends from the user's latest this-many liked items and as many
    disliked ones (its query's time grows with them: 5 ms at 5, 16 ms at 20 on the demo)."""


class CollaborativeSettings(_Section, frozen=True):
    """Item-to-item similarity learnt from the feedback events (the collaborative source)."""

    l2: PositiveFloat = 100.0
    """Regularisation of the model (EASE's lambda): higher trusts rare co-occurrences less. On
    the evaluation's leave-last-out task 10, 30, 300 and 1000 gave HR@10 0.085-0.112 against
    0.124."""
    max_items: Annotated[int, Meta(ge=2)] = 4000
    """Items the model relates, those with the most users. It holds 4 x the square of this in
    bytes (64 MB at 4000), and about as much again while it is rebuilt; a rebuild's time grows
    with the cube (2.3 s of CPU at 4000). On the evaluation data 6000 gained nothing."""
    refresh_seconds: Annotated[float, Meta(ge=0.0)] = 5.0
    """Shortest time between the starts of two rebuilds; new feedback is in the model within
    this (or the CPU-share pause, if longer) plus one build."""
    max_cpu_share: Annotated[float, Meta(gt=0.0, le=1.0)] = 0.25
    """Largest share of one core that rebuilding may take: after a build of t seconds the
    next waits at least t / share."""
    neighbourhood: Annotated[int, Meta(ge=0, le=100)] = 5
    """Strongest neighbours whose vectors are blended into each related item's own for the
    neighbourhood source (0 turns that source off). On the evaluation's ReDial requests 5 gave
    R@10 +0.017, 20 gave +0.012."""


class FusionSettings(_Section, frozen=True):
    """How the candidate sources' lists are fused, and how the fusion learns from its use."""

    log_impressions: bool = True
    """Log every recommendation response (each candidate's sources, ranks and scores, and
    whether it was shown) in the database, to learn the fusion from the feedback that answers
    it."""
    retention_days: PositiveFloat = 30.0
    """Logged impressions older than this are deleted."""
    max_impressions: PositiveInt = 100_000
    """Most impressions kept; the oldest beyond are deleted."""
    flush_seconds: PositiveFloat = 1.0
    """Logged impressions wait in memory at most this long before they are written together."""
    batch_size: PositiveInt = 256
    """Impressions written in one transaction; this many waiting are written at once."""
    max_pending: PositiveInt = 20_000
    """Impressions that may wait to be written; beyond, new ones are dropped (and counted)."""
    label_window_hours: PositiveFloat = 168.0
    """Feedback that names no request_id answers the latest impression of its user and item
    made at most this long before it; feedback that names one answers that impression."""
    train_interval_seconds: Annotated[float, Meta(ge=0.0)] = 300.0
    """How often the fusion weights are learned again from the impressions; 0 turns the
    scheduled learning off (POST /admin/fusion/train still learns)."""
    min_labelled_impressions: PositiveInt = 100
    """Impressions that can teach the fusion (a liked candidate and a disliked one, or a liked
    one and one without an answer, both shown or neither; from at least two sources) needed
    before learned weights replace plain reciprocal-rank fusion."""
    max_training_impressions: PositiveInt = 20_000
    """The newest impressions looked at when learning."""
    prior_strength: Annotated[float, Meta(ge=0.0)] = 10.0
    """How strongly the learned weights are held to plain RRF's equal weights (in impressions'
    worth of evidence)."""


class FeedbackSettings(_Section, frozen=True):
    """How feedback events turn into a user's preference vector."""

    neutral_rating: Annotated[float, Meta(gt=0.0, lt=5.0)] = 2.5
    """Ratings above this count as positive, below it as negative (scale 0 to 5)."""
    half_life_days: PositiveFloat = 90.0
    """Age at which an event weighs half as much in the preference vector as a new one."""
    preference_flush_seconds: PositiveFloat = 1.0
    """How often the users' changed preference vectors are written to the database, all in one
    transaction. An event is durable when it is acknowledged, and a restart after a crash folds
    the events that the written vectors lack back in: longer saves writes, at the cost of more
    events to fold in then."""


class CacheSettings(_Section, frozen=True):
    """Caches that answer repeated requests without the encoder or the index."""

    items: Annotated[int, Meta(ge=0)] = 100_000
    """Catalog items the store keeps in memory for answers (about 1 kB each), read at start-up
    up to this many, the most recently read kept; an answer's items are otherwise read from the
    database, which costs milliseconds per request. 0 turns this cache off."""
    context_vectors: Annotated[int, Meta(ge=0)] = 10_000
    """Request contexts whose vector is kept (about 1.5 kB each), least recently used dropped
    first; 0 turns this cache off."""
    results: Annotated[int, Meta(ge=0)] = 10_000
    """Recommendation answers kept, keyed by the whole request; 0 turns this cache off. A user's
    feedback or deletion drops their answers, any catalog change, re-ranker switch or change of
    the learned fusion weights drops all."""
    result_ttl_seconds: Annotated[float, Meta(ge=0.0)] = 30.0
    """Longest time an answer is reused when other users' feedback may have changed the popularity
    and collaborative sources since it was computed; one computed after those models caught up
    (recommend.popularity_refresh_seconds after the last feedback, or a collaborative rebuild)
    is reused until something changes. 0 turns the result cache off."""


class Settings(_Section, frozen=True):
    """Everything the appliance can be configured with."""

    data_dir: Path = Path("data")
    """Folder of the DuckDB file and the vector index; owned by one server process."""
    models_dir: Path = Path("models")
    """Folder of the model manifest and the weights it lists."""
    server: ServerSettings = ServerSettings()
    auth: AuthSettings = AuthSettings()
    embedder: EmbedderSettings = EmbedderSettings()
    index: IndexSettings = IndexSettings()
    reranker: RerankerSettings = RerankerSettings()
    recommend: RecommendSettings = RecommendSettings()
    feedback: FeedbackSettings = FeedbackSettings()
    cache: CacheSettings = CacheSettings()
    collaborative: CollaborativeSettings = CollaborativeSettings()
    fusion: FusionSettings = FusionSettings()


def load_settings(
    config_file: Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build the settings from defaults, a TOML file, the environment and explicit overrides.

    Args:
        config_file: TOML file to read; defaults to the file named by ``APPLIANCE_CONFIG``.
        environ: Environment to read ``APPLIANCE_*`` variables from; defaults to ``os.environ``.
        overrides: Nested values that win over every other source (CLI flags).

    Returns:
        The frozen settings tree.

    Raises:
        ConfigError: A file is unreadable, a key is unknown, or a value is out of range.

    """
    env = os.environ if environ is None else environ
    tree: dict[str, Any] = {}
    path = config_file or (Path(env[ENV_CONFIG_FILE]) if env.get(ENV_CONFIG_FILE) else None)
    if path is not None:
        try:
            _merge(tree, tomllib.loads(path.read_text(encoding="utf-8")))
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise ConfigError(f"cannot read the configuration file {path}: {e}") from e
    _merge(tree, _lists_from_strings(_from_environment(env), Settings))
    _merge(tree, dict(overrides or {}))
    try:
        return msgspec.convert(tree, Settings, strict=False, dec_hook=_decode_path)
    except msgspec.ValidationError as e:
        raise ConfigError(f"invalid configuration: {e}") from e


def _decode_path(kind: type, value: Any) -> Any:
    if kind is Path and isinstance(value, str | Path):
        return Path(value)
    raise NotImplementedError


def _from_environment(env: Mapping[str, str]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or name in _CLIENT_VARIABLES:
            continue
        path = name.removeprefix(ENV_PREFIX).lower().split("__")
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return tree


def _lists_from_strings(
    tree: dict[str, Any], struct: type[msgspec.Struct], prefix: str = ENV_PREFIX
) -> dict[str, Any]:
    # Environment values are strings; a list setting takes a JSON list or comma-separated values.
    hints = typing.get_type_hints(struct)
    for name, value in tree.items():
        kind = hints.get(name)
        variable = f"{prefix}{name.upper()}"
        if isinstance(value, dict) and isinstance(kind, type) and issubclass(kind, msgspec.Struct):
            _lists_from_strings(value, kind, f"{variable}__")
        elif isinstance(value, str) and typing.get_origin(kind) in {tuple, list}:
            tree[name] = _parse_list(variable, value)
    return tree


def _parse_list(name: str, value: str) -> list[Any]:
    text = value.strip()
    if text.startswith("["):
        try:
            parsed = msgspec.json.decode(text)
        except msgspec.DecodeError as e:
            raise ConfigError(
                f"{name} starts with '[' but is not a JSON list ({e}); "
                "give a JSON list or comma-separated values"
            ) from e
        if not isinstance(parsed, list):
            raise ConfigError(f"{name} is not a JSON list")
        return parsed
    return [part.strip() for part in text.split(",") if part.strip()]


def _merge(into: dict[str, Any], other: Mapping[str, Any]) -> None:
    for key, value in other.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = dict(value) if isinstance(value, Mapping) else value


def describe(settings: Settings) -> dict[str, Any]:
    """Return the effective settings as plain JSON-ready values."""
    return msgspec.to_builtins(settings, enc_hook=str)  # type: ignore[no-any-return]


MASK = "***"
_SECRET_NAME = re.compile(r"key|secret|password|token", re.IGNORECASE)
_URL_CREDENTIALS = re.compile(r"(?<=://)[^/?#\s]*@")


def redact(tree: Mapping[str, Any]) -> dict[str, Any]:
    """Mask the secrets in a ``describe`` tree, for showing the settings to a client.

    A non-empty value of a field whose name contains key, secret, password or token becomes
    ``***``, a list of keys included (numbers and booleans, such as a count of keys, are kept);
    fields ending in ``_env`` name an environment variable and are kept. The user and password
    inside URLs (``https://user:pass@host``) are masked wherever they appear.
    """
    shown: dict[str, Any] = {}
    for name, value in tree.items():
        if isinstance(value, Mapping):
            shown[name] = redact(value)
        elif (
            _SECRET_NAME.search(name)
            and not name.endswith("_env")
            and value not in ("", None, [], ())
            and not isinstance(value, bool | int | float)
        ):
            shown[name] = MASK
        elif isinstance(value, str):
            shown[name] = _URL_CREDENTIALS.sub(f"{MASK}@", value)
        else:
            shown[name] = value
    return shown


def reference() -> list[tuple[str, str, str]]:
    """List every setting as (environment variable, default, description), for the docs.

    Descriptions are the attribute docstrings in this module, read from its source so that the
    documentation cannot drift from the code.
    """
    import ast  # noqa: PLC0415 - documentation only
    import inspect  # noqa: PLC0415
    import itertools  # noqa: PLC0415

    docs: dict[tuple[str, str], str] = {}
    tree = ast.parse(inspect.getsource(inspect.getmodule(reference)))  # type: ignore[arg-type]
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
        body = cls.body
        for field, doc in itertools.pairwise(body):
            if (
                isinstance(field, ast.AnnAssign)
                and isinstance(field.target, ast.Name)
                and isinstance(doc, ast.Expr)
                and isinstance(doc.value, ast.Constant)
            ):
                # One line per table row: a docstring's line breaks are only source layout.
                docs[cls.name, field.target.id] = " ".join(str(doc.value.value).split())

    rows: list[tuple[str, str, str]] = []

    def walk(struct: type[msgspec.Struct], instance: msgspec.Struct, prefix: str) -> None:
        for name in struct.__struct_fields__:
            value = getattr(instance, name)
            if isinstance(value, msgspec.Struct):
                walk(type(value), value, f"{prefix}{name.upper()}__")
            else:
                default = str(list(value)) if isinstance(value, tuple) else str(value)
                rows.append(
                    (f"{prefix}{name.upper()}", default, docs.get((struct.__name__, name), ""))
                )

    walk(Settings, Settings(), ENV_PREFIX)
    return rows
