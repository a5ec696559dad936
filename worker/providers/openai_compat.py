"""A provider for any OpenAI-compatible chat-completions API (OpenAI, vLLM, Ollama, LM Studio, proxies).

Retries have one owner, Restate (docs/design.md, "Guarantees" 5): the SDK client is built
with `max_retries=0` and every failure is mapped to a `ProviderError` that tells
the step whether retrying can help.

What each step asks, and in which JSON shape, is worker/prompts.py (the step contracts);
this module is the transport: messages, structured-output formats, errors, usage.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

import httpx2
import openai
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletion, ChatCompletionMessageParam, completion_create_params
from pydantic import BaseModel, SecretStr, ValidationError

from worker.budget.window import RateLimitAdvice
from worker.models import LLMUsage, Metric, Step
from worker.prompts import (
    EXTRACT_PROMPT,
    EXTRACT_SHOT,
    FORMAT_PROMPT,
    FORMAT_SHOT,
    REPAIR_PROMPT,
    REPAIR_TAG,
    REPORT_TAG,
    SORT_PROMPT,
    SORT_SHOT,
    OrderAnswer,
    QuotesAnswer,
    RowItem,
    RowsAnswer,
    delimit,
    extract_schema,
    format_schema,
    metrics_block,
    sort_schema,
)
from worker.providers.base import (
    Answer,
    CallInfo,
    InvalidAnswerError,
    PermanentProviderError,
    TransientProviderError,
)
from worker.settings import Settings

DEFAULT_BASE_URL = "https://api.openai.com/v1"
REPAIR_TEMPERATURE = 0.7  # a repair attempt samples differently: repeating a greedy answer repeats its mistake

_W = TypeVar("_W", bound=BaseModel)
T = TypeVar("T")


def build_messages(
    system: str, example: tuple[str, BaseModel] | None, data: str, repair_hint: str | None
) -> list[ChatCompletionMessageParam]:
    """System instructions, one worked example, the delimited data, and (on a repair attempt) the last error."""
    messages: list[ChatCompletionMessageParam] = [{"role": "system", "content": system}]
    if example is not None:
        messages.append({"role": "user", "content": example[0]})
        messages.append({"role": "assistant", "content": example[1].model_dump_json()})
    messages.append({"role": "user", "content": data})
    if repair_hint:
        messages.append({"role": "user", "content": REPAIR_PROMPT + delimit(REPAIR_TAG, repair_hint)})
    return messages


def _request(
    call: CallInfo, *, text: str = "", quotes: list[str] | None = None, metrics: list[Metric] | None = None
) -> tuple[list[ChatCompletionMessageParam], str, dict[str, Any]]:
    """What one call of a step sends: its messages, and the name and JSON schema of the answer."""
    if call.step is Step.EXTRACT:
        messages = build_messages(EXTRACT_PROMPT, EXTRACT_SHOT, delimit(REPORT_TAG, text), call.repair_hint)
        return messages, "quoted_metrics", extract_schema(quotes or [])
    listed = metrics or []
    if call.step is Step.SORT:
        messages = build_messages(SORT_PROMPT, SORT_SHOT, metrics_block(listed), call.repair_hint)
        return messages, "metric_order", sort_schema(len(listed))
    messages = build_messages(FORMAT_PROMPT, FORMAT_SHOT, metrics_block(listed), call.repair_hint)
    return messages, "table_rows", format_schema(len(listed))


def _json_schema_format(name: str, schema: dict[str, Any]) -> completion_create_params.ResponseFormat:
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


_JSON_OBJECT: completion_create_params.ResponseFormat = {"type": "json_object"}


# --- Errors --------------------------------------------------------------------------------------


def parse_retry_after(headers: Mapping[str, str]) -> timedelta | None:
    """The server-advised delay from `retry-after-ms`, or `Retry-After` in seconds or as an HTTP date."""
    lowered = {k.lower(): v for k, v in headers.items()}
    if (ms := lowered.get("retry-after-ms")) is not None:
        try:
            return timedelta(milliseconds=max(0.0, float(ms)))
        except ValueError:
            pass
    value = lowered.get("retry-after")
    if value is None:
        return None
    try:
        return timedelta(seconds=max(0.0, float(value)))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return timedelta(seconds=max(0.0, when.timestamp() - time.time()))


def rate_limit_advice(headers: Mapping[str, str]) -> RateLimitAdvice:
    """What a 429 said about the server's limits: Retry-After and OpenAI's x-ratelimit-* headers."""
    lowered = {k.lower(): v for k, v in headers.items()}
    retry_after = parse_retry_after(lowered)

    def count(name: str) -> int | None:
        try:
            return int(lowered[f"x-ratelimit-{name}"])
        except (KeyError, ValueError):
            return None

    def duration(name: str) -> float | None:
        value = lowered.get(f"x-ratelimit-{name}")
        return None if value is None else parse_duration(value)

    return RateLimitAdvice(
        retry_after_s=None if retry_after is None else retry_after.total_seconds(),
        limit_requests=count("limit-requests"),
        limit_tokens=count("limit-tokens"),
        remaining_requests=count("remaining-requests"),
        remaining_tokens=count("remaining-tokens"),
        reset_requests_s=duration("reset-requests"),
        reset_tokens_s=duration("reset-tokens"),
    )


def parse_duration(text: str) -> float | None:
    """OpenAI's reset durations: "1s", "6m0s", "20ms", "1h2m3.5s"; None when unreadable."""
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", text.strip())
    if not parts or "".join(n + u for n, u in parts) != text.strip():
        return None
    scale = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    return sum(float(n) * scale[u] for n, u in parts)


def safe_url(url: str) -> str:
    """A URL safe to show: user info and query string dropped (either may carry credentials)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _server_message(err: openai.APIStatusError) -> str:
    body = err.body
    if isinstance(body, Mapping):
        message = body.get("message", body)
        return message if isinstance(message, str) else json.dumps(message)[:300]
    return str(body or "")[:300]


def _rejects_json_schema(err: openai.APIStatusError) -> bool:
    """A 400 from a server without structured outputs (vLLM, Ollama and LM Studio phrase it differently)."""
    if err.status_code != 400:
        return False
    text = f"{err.param or ''} {_server_message(err)}".lower()
    # "not supported" alone is too broad (a model may reject other parameters): require a format word too.
    return any(k in text for k in ("response_format", "json_schema", "structured output")) or (
        "not supported" in text and ("format" in text or "schema" in text)
    )


def _causes(err: BaseException) -> list[BaseException]:
    chain = [err]
    while chain[-1].__cause__ is not None:
        chain.append(chain[-1].__cause__)
    return chain


def _summary(err: BaseException) -> str:
    """The kind of a connection failure, without its text (which may quote a URL with credentials)."""
    reason = err.strerror if isinstance(err, OSError) else None
    return f"{type(err).__name__} ({reason})" if reason else type(err).__name__


def _timed_out(err: BaseException) -> bool:
    """Whether a failed call timed out. The aiohttp transport reports a refused or reset
    connection as a timeout too (`ConnectTimeout`), so the chain of causes decides."""
    return any(isinstance(cause, TimeoutError) for cause in _causes(err))


# --- The provider --------------------------------------------------------------------------------

LOCAL_API_KEY = SecretStr("local")  # llama.cpp's server checks no key; the SDK wants one
LOCAL_TIMEOUT = 300.0  # seconds: a CPU-bound model answers in seconds, far more on a busy machine


@dataclass(frozen=True)
class Endpoint:
    """What one OpenAI-compatible provider calls: its name in the ledger, where, with which key and models."""

    provider: str
    base_url: str
    api_key: SecretStr = field(repr=False)
    model: str
    step_models: Mapping[Step, str] = field(default_factory=dict)
    temperature: float | None = None
    timeout: float = 60.0
    max_concurrency: int = 100

    @classmethod
    def of(cls, settings: Settings) -> Endpoint:
        """The configured provider's endpoint: OpenAI (or any compatible API), or the local llama.cpp server."""
        steps = (Step.EXTRACT, Step.SORT, Step.FORMAT)
        if settings.provider == "local":
            model = settings.llm_model if "llm_model" in settings.model_fields_set else settings.local_llm_model
            return cls(
                provider="local",
                base_url=settings.local_llm_url,
                api_key=LOCAL_API_KEY,
                model=model,
                step_models={step: settings.model_for(step) if _step_override(settings, step) else model
                             for step in steps},
                # Greedy decoding: the same report gets the same answer (a repair samples differently).
                temperature=0.0 if settings.llm_temperature is None else settings.llm_temperature,
                # A call takes seconds on a CPU, and more requests than the server decodes at once only
                # queue there, where their deadlines run: queue them in the worker instead.
                timeout=_explicit(settings, "llm_timeout_seconds", LOCAL_TIMEOUT),
                max_concurrency=_explicit(settings, "llm_max_concurrency", settings.local_llm_parallel),
            )  # fmt: skip
        if settings.openai_api_key is None or not settings.openai_api_key.get_secret_value():
            # Local servers without auth accept any placeholder; a missing key is a configuration mistake.
            raise ValueError(
                "OPENAI_API_KEY is required for the openai provider (any placeholder for servers without auth)"
            )
        return cls(
            provider="openai",
            base_url=settings.openai_base_url or DEFAULT_BASE_URL,
            api_key=settings.openai_api_key,
            model=settings.llm_model,
            step_models={step: settings.model_for(step) for step in steps},
            temperature=settings.llm_temperature,
            timeout=settings.llm_timeout_seconds,
            max_concurrency=settings.llm_max_concurrency,
        )

    @classmethod
    def fallback(cls, settings: Settings) -> Endpoint:
        """LLM_FALLBACK_MODEL, at LLM_FALLBACK_BASE_URL with LLM_FALLBACK_API_KEY when given, else at the provider's."""
        if not settings.llm_fallback_model:
            raise ValueError("LLM_FALLBACK_MODEL is not set")
        if settings.llm_fallback_base_url:
            key = settings.llm_fallback_api_key or settings.openai_api_key or LOCAL_API_KEY
            return cls(
                provider="openai",
                base_url=settings.llm_fallback_base_url,
                api_key=key,
                model=settings.llm_fallback_model,
                temperature=settings.llm_temperature,
                timeout=settings.llm_timeout_seconds,
                max_concurrency=settings.llm_max_concurrency,
            )
        primary = cls.of(settings)
        return cls(
            provider=primary.provider,
            base_url=primary.base_url,
            api_key=settings.llm_fallback_api_key or primary.api_key,
            model=settings.llm_fallback_model,
            temperature=primary.temperature,
            timeout=primary.timeout,
            max_concurrency=primary.max_concurrency,
        )


def _explicit(settings: Settings, name: str, default: T) -> T:
    """The setting when the environment set it, else this provider's own default."""
    value: T = getattr(settings, name)
    return value if name in settings.model_fields_set else default


def _step_override(settings: Settings, step: Step) -> bool:
    return settings.model_for(step) != settings.llm_model


class OpenAIProvider:
    """The Provider protocol over `AsyncOpenAI` chat completions. Build one per process and reuse it."""

    def __init__(self, settings: Settings, endpoint: Endpoint | None = None) -> None:
        endpoint = endpoint or Endpoint.of(settings)
        self._name = endpoint.provider
        self._api_key: SecretStr = endpoint.api_key
        self._base_url = endpoint.base_url
        self._timeout = endpoint.timeout
        self._model = endpoint.model
        self._step_models = dict(endpoint.step_models)
        self._temperature = endpoint.temperature
        self._max_tokens = settings.llm_max_tokens
        # Models whose server rejected json_schema: asked in JSON mode from then on (per process).
        self._json_mode_models: set[str] = set()
        # The client is bound to the event loop that created it (its connection pool is), so keep the loop too.
        self._client: AsyncOpenAI | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None
        # At most this many calls in flight per process. A call waits for a slot *before*
        # its deadline starts: under a backlog (hundreds of invocations released at once
        # after a restart) an unbounded client times out every call and nothing gets through.
        self._max_concurrency = endpoint.max_concurrency
        self._slots: asyncio.Semaphore | None = None

    def __repr__(self) -> str:
        return f"OpenAIProvider(base_url={safe_url(self._base_url)!r}, model={self._model!r})"

    @property
    def name(self) -> str:
        return self._name

    def model_for(self, step: Step) -> str:
        return self._step_models.get(step, self._model)

    async def extract(self, text: str, quotes: list[str], call: CallInfo) -> Answer[QuotesAnswer]:
        return await self._ask(call, *_request(call, text=text, quotes=quotes), QuotesAnswer)

    async def order(self, metrics: list[Metric], call: CallInfo) -> Answer[OrderAnswer]:
        return await self._ask(call, *_request(call, metrics=metrics), OrderAnswer)

    async def rows(self, metrics: list[Metric], call: CallInfo) -> Answer[list[RowItem]]:
        answer = await self._ask(call, *_request(call, metrics=metrics), RowsAnswer)
        return Answer(answer.value.rows, answer.usage)

    def request_size(
        self,
        call: CallInfo,
        *,
        text: str = "",
        quotes: list[str] | None = None,
        metrics: list[Metric] | None = None,
    ) -> tuple[int, int]:
        messages, schema_name, schema = _request(call, text=text, quotes=quotes, metrics=metrics)
        # JSON without ASCII escapes: at least as many bytes as the texts it carries, no more than needed.
        sent = json.dumps(messages, ensure_ascii=False) + json.dumps(_json_schema_format(schema_name, schema))
        return len(sent.encode("utf-8", "surrogatepass")), len(messages)

    async def aclose(self) -> None:
        """Close the HTTP connection pool (optional: for clean shutdowns and tests)."""
        client, self._client = self._client, None
        if client is not None and self._client_loop is asyncio.get_running_loop():
            await client.close()

    # -- internals --

    def _get_client(self) -> AsyncOpenAI:
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            self._client = AsyncOpenAI(
                api_key=self._api_key.get_secret_value(),
                base_url=self._base_url,
                timeout=self._timeout,
                max_retries=0,  # Restate is the only retry owner.
                # The SDK's aiohttp transport: the default httpx2 pool rescans every pooled
                # connection on each request and release, which made it the worker's largest
                # CPU cost per call (docs/benchmarks.md). One connection per call slot.
                http_client=openai.DefaultAioHttpClient(
                    timeout=self._timeout,
                    limits=httpx2.Limits(
                        max_connections=self._max_concurrency, max_keepalive_connections=self._max_concurrency
                    ),
                ),
            )
            self._slots = asyncio.Semaphore(self._max_concurrency)
            self._client_loop = loop
        return self._client

    async def _ask(
        self,
        call: CallInfo,
        messages: list[ChatCompletionMessageParam],
        schema_name: str,
        schema: dict[str, Any],
        wire: type[_W],
    ) -> Answer[_W]:
        model = self.model_for(call.step)
        if model not in self._json_mode_models:
            try:
                completion = await self._complete(call, model, messages, _json_schema_format(schema_name, schema))
            except openai.BadRequestError as err:
                if not _rejects_json_schema(err):
                    raise self._status_error(err, model) from None
                self._json_mode_models.add(model)
            else:
                return _parse(completion, call, model, wire)
        completion = await self._complete(call, model, messages, _JSON_OBJECT)
        return _parse(completion, call, model, wire)

    async def _complete(
        self,
        call: CallInfo,
        model: str,
        messages: list[ChatCompletionMessageParam],
        response_format: completion_create_params.ResponseFormat,
    ) -> ChatCompletion:
        """One HTTP request. Status errors are mapped, except a 400 in json_schema mode (the caller may fall back)."""
        headers = {"X-Report-Id": quote(call.report_id, safe="/:"), "X-Report-Step": call.step.short}
        temperature = self._temperature
        if temperature is not None and call.attempt > 1:
            temperature = max(temperature, REPAIR_TEMPERATURE)
        client = self._get_client()
        assert self._slots is not None
        try:
            async with self._slots:
                if call.permit is not None:
                    call.permit.spend()  # the model's budget granted this request (worker/budget)
                # A total deadline: the SDK's timeout bounds each read, not a server that trickles bytes.
                async with asyncio.timeout(self._timeout):
                    return await client.chat.completions.create(
                        model=model,
                        messages=messages,
                        temperature=openai.omit if temperature is None else temperature,
                        max_tokens=openai.omit if self._max_tokens is None else self._max_tokens,
                        # The same JSON on the wire as `response_format=`, but the SDK does not walk
                        # the schema with its type-driven transform on every call: that walk was a
                        # fifth of the worker's CPU under load. The format is typed where it is built.
                        extra_body={"response_format": response_format},
                        extra_headers=headers,
                    )
        except openai.BadRequestError as err:
            if response_format["type"] == "json_schema":
                raise
            raise self._status_error(err, model) from None
        except openai.APIStatusError as err:
            raise self._status_error(err, model) from None
        except (openai.APIConnectionError, TimeoutError) as err:  # APITimeoutError is an APIConnectionError
            if _timed_out(err):
                raise TransientProviderError(
                    f"{self._endpoint()} did not answer within {self._timeout:g}s (model {model!r})"
                ) from None
            raise TransientProviderError(f"cannot reach {self._endpoint()}: {_summary(_causes(err)[-1])}") from err

    def _endpoint(self) -> str:
        return safe_url(self._base_url.rstrip("/") + "/chat/completions")

    def _status_error(self, err: openai.APIStatusError, model: str) -> TransientProviderError | PermanentProviderError:
        status = err.status_code
        detail = _server_message(err)
        key = self._api_key.get_secret_value()
        if key:
            detail = detail.replace(key, "***")  # some servers echo the credential they rejected
        message = f"{self._endpoint()} answered HTTP {status} for model {model!r}" + (f": {detail}" if detail else "")
        if status == 429:
            if err.code == "insufficient_quota":
                # OpenAI's 429 for an exhausted budget: no retry within minutes can fix it.
                return PermanentProviderError(message)
            headers = dict(err.response.headers)
            return TransientProviderError(
                message, retry_after=parse_retry_after(headers), rate_limit=rate_limit_advice(headers)
            )
        if status >= 500 or status in (408, 409):
            return TransientProviderError(message)
        return PermanentProviderError(message)


def _parse(completion: object, call: CallInfo, model: str, wire: type[_W]) -> Answer[_W]:
    step = call.step.short
    # The SDK does not validate response bodies: a proxy's HTML page or a partial object arrives as-is.
    if not isinstance(completion, ChatCompletion):
        raise InvalidAnswerError(f"{step}: the response is not a chat completion: {str(completion)[:80]!r}")
    try:
        choice = completion.choices[0]
        refusal, content, finish = choice.message.refusal, choice.message.content, choice.finish_reason
    except (AttributeError, IndexError, TypeError):
        raise InvalidAnswerError(f"{step}: the response has no choices[0].message") from None
    if refusal:
        raise InvalidAnswerError(f"{step}: the model refused: {refusal[:300]}")
    if finish == "length":
        raise InvalidAnswerError(f"{step}: the answer was cut off at the token limit")
    content = (content or "").strip()
    if not content:
        raise InvalidAnswerError(f"{step}: the answer is empty (finish_reason={finish})")
    try:
        value = wire.model_validate_json(_strip_code_fence(content))
    except ValidationError as err:
        raise InvalidAnswerError(f"{step}: {_describe(err, content)}") from None
    usage = completion.usage
    return Answer(
        value,
        LLMUsage(
            model=completion.model or model,
            response_id=completion.id or None,
            prompt_tokens=(usage.prompt_tokens or 0) if usage else 0,
            completion_tokens=(usage.completion_tokens or 0) if usage else 0,
        ),
    )


def _strip_code_fence(content: str) -> str:
    """JSON-mode servers sometimes wrap the object in ```json fences."""
    match = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", content, flags=re.DOTALL)
    return match.group(1) if match else content


def _describe(err: ValidationError, content: str) -> str:
    """A short, model-readable account of what was wrong with an answer (it may become the repair hint)."""
    errors = err.errors()
    if errors[0]["type"] == "json_invalid":
        return f"the answer is not valid JSON ({errors[0]['msg']}); it starts with {content[:80]!r}"
    problems = [f"{'.'.join(str(p) for p in e['loc']) or 'answer'}: {e['msg']}" for e in errors[:5]]
    return "the answer does not match the expected JSON shape: " + "; ".join(problems)
