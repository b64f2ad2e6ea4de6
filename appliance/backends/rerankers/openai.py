"""Pointwise re-ranking through any OpenAI-compatible chat-completions API.

Each candidate is one request that asks "does this item fit the request? yes or no" for a single
token, and its score is P(yes) against P(no) read from that token's top log-probabilities. The
model's words are never parsed for ids, so an item or a request that carries instructions can
change a score but never make the result name an item that was not given.

Servers that return no log-probabilities are still usable: the answer "yes" scores 1.0 and "no"
0.0; a candidate whose answer is neither is left out, and keeps its retrieval order.

Requests that share a prefix (the instructions, the examples and the request) are cheap on
servers with a prompt cache, such as llama.cpp's, so the item always comes last.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Sequence
from typing import Any

import httpx
import msgspec

from appliance.backends.rerankers.protocol import RerankCandidate, RerankTimeoutError
from appliance.errors import BackendError, ConfigError

_INSTRUCTION = "Decide whether the item fits the request. Answer yes or no."
# One worked example per answer: without them a 135M model starts a sentence ("The", "A") and
# yes/no are ~10% of the first token's probability; with them, ~95%.
_EXAMPLES = (
    ("a warm jacket for winter hiking", "Insulated down parka. Outdoor clothing", "yes"),
    ("a warm jacket for winter hiking", "Cast iron skillet. Cookware", "no"),
)
# OpenAI's maximum; llama.cpp's server accepts any number.
_TOP_LOGPROBS = 20

logger = logging.getLogger(__name__)


class _TopLogprob(msgspec.Struct):
    token: str
    logprob: float


class _TokenLogprob(msgspec.Struct):
    token: str
    logprob: float
    top_logprobs: list[_TopLogprob] = []


class _Logprobs(msgspec.Struct):
    content: list[_TokenLogprob] | None = None


class _Message(msgspec.Struct):
    content: str | None = None


class _Choice(msgspec.Struct):
    message: _Message
    logprobs: _Logprobs | None = None


class _Completion(msgspec.Struct):
    choices: list[_Choice]


_decode = msgspec.json.Decoder(_Completion).decode


class OpenAIReranker:
    """Scores candidates with a chat model behind an OpenAI-compatible HTTP API."""

    name = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        concurrency: int = 4,
        item_chars: int = 200,
        context_chars: int = 500,
    ) -> None:
        """Prepare the HTTP client; nothing is sent until the first call.

        Args:
            base_url: The API's root, up to and including ``/v1``.
            model: The model name sent with each request.
            api_key: Sent as a bearer token; kept only in the client's headers, never logged
                or put in a message.
            concurrency: Requests in flight at once, over all calls together.
            item_chars: Each candidate's "title. text" is cut to this many characters.
            context_chars: A longer request keeps its last this-many characters.

        Raises:
            ConfigError: A limit is not positive.

        """
        if min(concurrency, item_chars, context_chars) < 1:
            raise ConfigError("the openai re-ranker's concurrency and lengths must be positive")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self._url = f"{self.base_url}/chat/completions"
        self._item_chars = item_chars
        self._context_chars = context_chars
        self._slots = asyncio.Semaphore(concurrency)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(
            headers=headers,
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        )

    def __repr__(self) -> str:
        return f"OpenAIReranker(base_url={self.base_url!r}, model={self.model!r})"

    async def rerank(
        self, context: str, candidates: Sequence[RerankCandidate], *, deadline: float
    ) -> list[tuple[str, float]]:
        """Score each candidate by P(yes), best first; unanswerable ones are left out.

        Raises:
            RerankTimeoutError: ``deadline`` (``time.monotonic()``) passed first; requests
                still in flight are cancelled.
            BackendError: The API could not be reached or answered with an error or
                something that is not a chat completion.

        """
        firsts: dict[str, RerankCandidate] = {}
        for candidate in candidates:
            firsts.setdefault(candidate.item_id, candidate)
        unique = list(firsts.values())
        if not unique:
            return []
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RerankTimeoutError("the re-rank budget ran out before the first request")
        # A long request keeps its end: in a conversation, the latest words say the most.
        request = _one_line(context)[-self._context_chars :]
        loop = asyncio.get_running_loop()
        tasks = [asyncio.ensure_future(self._score(request, c, deadline)) for c in unique]
        try:
            async with asyncio.timeout_at(loop.time() + remaining):
                scores = await asyncio.gather(*tasks)
        except TimeoutError:
            raise RerankTimeoutError("the re-rank budget ran out waiting for the API") from None
        finally:
            # On any failure the other requests stop too; a cancelled request closes its
            # connection, which tells the server not to start it.
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        scored = [(c.item_id, s) for c, s in zip(unique, scores, strict=True) if s is not None]
        # sorted() is stable: equal scores keep the retrieval order.
        return sorted(scored, key=lambda pair: -pair[1])

    async def close(self) -> None:
        """Close the connections."""
        await self._client.aclose()

    async def _score(
        self, request: str, candidate: RerankCandidate, deadline: float
    ) -> float | None:
        item = f"{candidate.title}. {candidate.text}" if candidate.text else candidate.title
        messages = [{"role": "system", "content": _INSTRUCTION}]
        for example_request, example_item, answer in _EXAMPLES:
            messages.append({"role": "user", "content": _prompt(example_request, example_item)})
            messages.append({"role": "assistant", "content": answer})
        messages.append(
            {"role": "user", "content": _prompt(request, _one_line(item)[: self._item_chars])}
        )
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "temperature": 0,
            "max_tokens": 1,
            "logprobs": True,
            "top_logprobs": _TOP_LOGPROBS,
        }
        async with self._slots:
            timeout = max(deadline - time.monotonic(), 0.001)
            try:
                response = await self._client.post(self._url, json=body, timeout=timeout)
            except httpx.TimeoutException:
                raise RerankTimeoutError("the re-rank budget ran out waiting for the API") from None
            except httpx.HTTPError as e:
                raise BackendError(
                    f"the re-ranker API at {self.base_url} could not be reached "
                    f"({type(e).__name__}: {e})"
                ) from None
        if not response.is_success:
            # The body is left out on purpose: some APIs quote part of a rejected key there.
            raise BackendError(
                f"the re-ranker API at {self.base_url} answered HTTP {response.status_code}"
            )
        try:
            completion = _decode(response.content)
        except msgspec.DecodeError:
            raise BackendError(
                f"the re-ranker API at {self.base_url} answered HTTP {response.status_code} "
                "with something that is not a chat completion"
            ) from None
        if not completion.choices:
            raise BackendError(f"the re-ranker API at {self.base_url} answered with no choices")
        choice = completion.choices[0]
        score = _from_logprobs(choice.logprobs)
        if score is None:
            score = _from_text(choice.message.content)
        if score is None:
            logger.debug(
                "the re-ranker model answered neither yes nor no for %s", candidate.item_id
            )
        return score


def _prompt(request: str, item: str) -> str:
    return f"Request: {request}\nItem: {item}"


def _one_line(text: str) -> str:
    # Line breaks in a request or an item cannot start what looks like a new part of the prompt.
    return " ".join(text.split())


def _from_logprobs(logprobs: _Logprobs | None) -> float | None:
    """P(yes) / (P(yes) + P(no)) for the first token, or None if neither is listed."""
    if logprobs is None or not logprobs.content:
        return None
    first = logprobs.content[0]
    listed = {t.token: t.logprob for t in first.top_logprobs}
    listed.setdefault(first.token, first.logprob)
    yes = [lp for token, lp in listed.items() if _word(token) == "yes"]
    no = [lp for token, lp in listed.items() if _word(token) == "no"]
    if not yes and not no:
        return None
    # An answer that is not listed is at most as likely as the least likely one that is, and
    # at most as likely as everything that is not listed together.
    unlisted = 1.0 - sum(math.exp(lp) for lp in listed.values())
    bound = min(*listed.values(), math.log(unlisted)) if unlisted > 0 else -math.inf
    return _sigmoid((_logsumexp(yes) if yes else bound) - (_logsumexp(no) if no else bound))


def _from_text(content: str | None) -> float | None:
    answer = _word(content or "").rstrip(".!")
    return {"yes": 1.0, "no": 0.0}.get(answer)


def _word(token: str) -> str:
    return token.strip().lower()


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def _logsumexp(values: list[float]) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))
