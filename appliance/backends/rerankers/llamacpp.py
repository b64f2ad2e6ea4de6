"""Pointwise re-ranking with a local GGUF model through llama.cpp.

Each candidate is scored by the model's probability of answering "yes" to "does this item fit
the request?", read straight from the logits; nothing is generated, so the output cannot name an
item that was not given, repeat one, or fail to parse. Asking a small model to write a ranking
("3,1,2") produced invalid permutations instead.

Speed comes from doing as little model work per request as possible (prompt processing is the
whole cost: ~200-360 tokens/s for a 135M model on two cores):

- the instructions and a worked example are decoded once, at start-up, into the key/value cache
  shared by every sequence, and kept there;
- the request is decoded once per call, as a token that belongs to all candidate sequences;
- each candidate is its own sequence holding only its (truncated) text and a short cue, and all
  of them go through the model in a single batch;
- the answer is read from the last position of each sequence;
- each candidate's text is cut shorter when the full length would not fit the call's time:
  the engine keeps a running measure of its seconds per token (prompt processing speed varies
  with the CPU and what else runs on it), so on a slow or busy machine the candidates are still
  all scored, on fewer words each, instead of the call running out of time and scoring none.

llama.cpp contexts are not thread-safe, so one worker thread owns the model; calls queue for it.
A call carries a deadline: llama.cpp's abort callback stops a batch that overruns it, so a
timed-out call never holds up the next one.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import math
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import llama_cpp as llama

from appliance.backends.rerankers.protocol import RerankCandidate, RerankTimeoutError
from appliance.cpus import usable_cpus
from appliance.errors import BackendError, ModelFileError

# The cached preamble. Its example is deliberately not from any one domain: the same model
# re-ranks whatever catalog the appliance holds.
_PREAMBLE = (
    "Decide whether the item fits the request. Answer yes or no.\n\n"
    "Request: a warm jacket for winter hiking\n"
    "Item: Insulated down parka. Outdoor clothing => yes\n"
    "Item: Cast iron skillet. Cookware => no\n\n"
)
_REQUEST_HEAD = "Request:"
_REQUEST_TAIL = "\nItem:"
_CUE = " =>"  # one token in common vocabularies; every token per candidate costs ~3 ms here
_YES = (" yes", " Yes")
_NO = (" no", " No")
_ABORTED = 2  # llama_decode's return code when the abort callback stopped it
#: Fewest tokens of a candidate's text scored when its full length would not fit the time left.
MIN_ITEM_TOKENS = 4
#: Share of the time left that a call plans to use: the rest absorbs its variation.
_PLANNED_SHARE = 0.7
#: Weight of the newest call in the running seconds-per-token measure.
_SPEED_WEIGHT = 0.2
_GGML_LOG_ERROR = 4

logger = logging.getLogger(__name__)


def _log(level: int, text: bytes, _data: ctypes.c_void_p) -> None:
    # An aborted batch is reported as an error too; the caller raises what matters, so llama.cpp's
    # own lines are kept for debugging only.
    if level == _GGML_LOG_ERROR:
        logger.debug("llama.cpp: %s", text.decode(errors="replace").rstrip())


# Module-level, so the C side never calls a collected function.
_LOG_CALLBACK = llama.llama_log_callback(_log)


def quiet_logs() -> None:
    """Route llama.cpp's log (it narrates every load and batch on stderr) to debug logging."""
    llama.llama_log_set(_LOG_CALLBACK, None)


class LlamaCppReranker:
    """Scores candidates with a GGUF model in this process."""

    name = "llamacpp"

    def __init__(
        self,
        model_path: Path,
        *,
        threads: int = 0,
        item_tokens: int = 10,
        context_tokens: int = 32,
        max_candidates: int = 20,
    ) -> None:
        """Load the model and decode the shared preamble.

        Args:
            model_path: A GGUF file.
            threads: CPU threads for the model; 0 means one per CPU the process may use.
            item_tokens: Each candidate's title and text are cut to this many tokens, or fewer
                (down to ``MIN_ITEM_TOKENS``) when that many would not fit the call's deadline.
            context_tokens: The request is cut to its last this-many tokens.
            max_candidates: Candidates scored per call; any beyond keep their retrieval order.

        Raises:
            ModelFileError: The file is missing or is not a model llama.cpp can load.

        """
        self.max_candidates = max_candidates
        self._engine = _Engine(
            model_path,
            threads=threads or usable_cpus(),
            item_tokens=item_tokens,
            context_tokens=context_tokens,
            max_sequences=max_candidates,
        )
        # One thread owns the llama.cpp context; everything that touches it runs there.
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llamacpp")

    async def rerank(
        self, context: str, candidates: Sequence[RerankCandidate], *, deadline: float
    ) -> list[tuple[str, float]]:
        """Score up to ``max_candidates`` candidates by P(yes), best first.

        Raises:
            RerankTimeoutError: ``deadline`` (``time.monotonic()``) passed first.

        """
        scored = list(candidates[: self.max_candidates])
        if not scored:
            return []
        texts = [f"{c.title}. {c.text}" if c.text else c.title for c in scored]
        job = self._worker.submit(self._engine.score, context, texts, deadline)
        scores = await asyncio.wrap_future(job)
        ranked = sorted(zip(scored, scores, strict=True), key=lambda pair: -pair[1])
        return [(c.item_id, s) for c, s in ranked]

    async def close(self) -> None:
        """Finish the queued call, if any, and free the model."""
        await asyncio.to_thread(self._worker.shutdown, wait=True)
        self._engine.close()


class _Engine:
    """The llama.cpp model and context; used from one thread at a time."""

    def __init__(
        self,
        model_path: Path,
        *,
        threads: int,
        item_tokens: int,
        context_tokens: int,
        max_sequences: int,
    ) -> None:
        if not model_path.is_file():
            raise ModelFileError(f"re-ranker model file {model_path} does not exist")
        quiet_logs()
        llama.llama_backend_init()
        model_params = llama.llama_model_default_params()
        self._model = llama.llama_model_load_from_file(str(model_path).encode(), model_params)
        if not self._model:
            raise ModelFileError(f"{model_path} is not a GGUF model llama.cpp can load")
        self._vocab = llama.llama_model_get_vocab(self._model)
        self._item_tokens = item_tokens
        self._context_tokens = context_tokens
        self._max_sequences = max_sequences

        self._preamble = self._tokenize(_PREAMBLE, bos=True)
        self._cue = self._tokenize(_CUE)
        self._yes = sorted({self._tokenize(t)[0] for t in _YES})
        self._no = sorted({self._tokenize(t)[0] for t in _NO})
        self._request_head = self._tokenize(_REQUEST_HEAD)
        self._request_tail = self._tokenize(_REQUEST_TAIL)
        request_overhead = len(self._request_head) + context_tokens + len(self._request_tail)
        capacity = (
            len(self._preamble) + request_overhead + max_sequences * (item_tokens + len(self._cue))
        )
        params = llama.llama_context_default_params()
        params.n_ctx = params.n_batch = params.n_ubatch = _round_up(capacity, 256)
        params.n_seq_max = max_sequences
        # One cache shared by all sequences: the preamble and the request are stored once.
        params.kv_unified = True
        params.n_threads = params.n_threads_batch = threads
        self._ctx = llama.llama_init_from_model(self._model, params)
        if not self._ctx:
            llama.llama_model_free(self._model)
            raise BackendError("llama.cpp could not create a context for the re-ranker")
        self._memory = llama.llama_get_memory(self._ctx)
        self._batch = llama.llama_batch_init(params.n_batch, 0, max_sequences)
        self._deadline = math.inf
        self._abort = llama.ggml_abort_callback(self._past_deadline)
        llama.llama_set_abort_callback(self._ctx, self._abort, None)
        self._closed = False

        everyone = list(range(max_sequences))
        started = time.perf_counter()
        self._decode([(t, i, everyone, False) for i, t in enumerate(self._preamble)])
        self.seconds_per_token = (time.perf_counter() - started) / len(self._preamble)
        """Running measure of a call's seconds per token processed, overheads included."""
        self.last_item_tokens = 0
        """Tokens of each candidate's text scored in the latest call."""

    def score(self, context: str, texts: Sequence[str], deadline: float) -> list[float]:
        """Return P(yes) for each text against the request ``context``."""
        if time.monotonic() >= deadline:
            raise RerankTimeoutError("the re-rank budget ran out while the call was queued")
        # A long request keeps its end: in a conversation, the latest words say the most.
        words = self._tokenize(" " + context.strip())[-self._context_tokens :]
        request = self._request_head + words + self._request_tail
        item_tokens = self._item_tokens_fitting(deadline, len(request), len(texts))
        start = len(self._preamble)
        everyone = list(range(len(texts)))
        tokens = [(t, start + i, everyone, False) for i, t in enumerate(request)]
        outputs = []
        for seq, text in enumerate(texts):
            suffix = self._tokenize(" " + text)[:item_tokens] + self._cue
            position = start + len(request)
            for j, token in enumerate(suffix):
                tokens.append((token, position + j, [seq], j == len(suffix) - 1))
            outputs.append(len(tokens) - 1)
        self._deadline = deadline
        started = time.perf_counter()
        finished = False
        try:
            self._decode(tokens)
            finished = True
            self.last_item_tokens = item_tokens
            return [self._p_yes(i) for i in outputs]
        finally:
            # A pass stopped at the deadline ran at most this fast: it corrects a measure that
            # was too hopeful, which would otherwise never learn.
            per_token = (time.perf_counter() - started) / len(tokens)
            if finished or per_token > self.seconds_per_token:
                self.seconds_per_token += _SPEED_WEIGHT * (per_token - self.seconds_per_token)
            self._deadline = math.inf
            # Keep the preamble, forget this request.
            llama.llama_memory_seq_rm(self._memory, -1, start, -1)

    def _item_tokens_fitting(self, deadline: float, request_tokens: int, candidates: int) -> int:
        """Return the tokens per candidate text that the time left to ``deadline`` affords."""
        if math.isinf(deadline):
            return self._item_tokens
        affordable = _PLANNED_SHARE * (deadline - time.monotonic()) / self.seconds_per_token
        per_candidate = int((affordable - request_tokens) / candidates) - len(self._cue)
        return max(MIN_ITEM_TOKENS, min(self._item_tokens, per_candidate))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        llama.llama_batch_free(self._batch)
        llama.llama_free(self._ctx)
        llama.llama_model_free(self._model)

    def _past_deadline(self, _data: ctypes.c_void_p) -> bool:
        return time.monotonic() >= self._deadline

    def _decode(self, tokens: list[tuple[int, int, list[int], bool]]) -> None:
        batch = self._batch
        for n, (token, position, sequences, wants_logits) in enumerate(tokens):
            batch.token[n] = token
            batch.pos[n] = position
            batch.n_seq_id[n] = len(sequences)
            for j, seq in enumerate(sequences):
                batch.seq_id[n][j] = seq
            batch.logits[n] = wants_logits
        batch.n_tokens = len(tokens)
        status = llama.llama_decode(self._ctx, batch)
        if status == _ABORTED:
            raise RerankTimeoutError("the re-rank budget ran out during the model pass")
        if status != 0:
            raise BackendError(f"llama.cpp could not score the candidates (status {status})")

    def _p_yes(self, output: int) -> float:
        logits = llama.llama_get_logits_ith(self._ctx, output)
        yes = _logsumexp([logits[t] for t in self._yes])
        no = _logsumexp([logits[t] for t in self._no])
        return 1.0 / (1.0 + math.exp(no - yes))

    def _tokenize(self, text: str, *, bos: bool = False) -> list[int]:
        data = text.encode()
        size = len(data) + 8
        buffer = (llama.llama_token * size)()
        parse_special = False  # markup in a request or an item is read as plain text
        count = llama.llama_tokenize(self._vocab, data, len(data), buffer, size, bos, parse_special)
        return list(buffer[:count])


def _logsumexp(values: list[float]) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def _round_up(value: int, step: int) -> int:
    return -(-value // step) * step
