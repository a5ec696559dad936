"""The server: a small, real OpenAI-compatible HTTP server for tests and load runs.

It speaks `POST /v1/chat/completions` (and `/chat/completions`) over real HTTP on
127.0.0.1, so the worker's provider, the openai SDK and httpx are exercised for
real. Tests script what it does per (report id, step) and read back what it saw:

    server = LLMServer().start()
    server.script("r1", Step.EXTRACT, [Status(500), Correct()])
    ...
    assert len(server.successful_calls("r1", "extract")) == 1

Calls are attributed by the `X-Report-Id` / `X-Report-Step` headers the provider
sends (falling back to the prompt). With nothing scripted every call gets a
correct answer (testllm/answers.py: the labels of the project's corpus, else every
number offered), so the server can also serve load tests:

    python -m testllm --port 8765 --latency 0.2
"""

from __future__ import annotations

import itertools
import json
import logging
import sys
import threading
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote

from testllm.answers import correct_answer, guess_step, offered_quotes
from testllm.behaviours import (
    Answer,
    Behaviour,
    Call,
    Correct,
    Hang,
    Malformed,
    RejectJsonSchema,
    Status,
    step_key,
)
from testllm.ratelimit import Admitted, Limiter, Peak, RateLimit, peak
from worker.models import Step

log = logging.getLogger(__name__)

COMPLETION_PATHS = ("/v1/chat/completions", "/chat/completions")
STATS_PATH = "/testllm/calls"
"""GET: every call since `?since=<epoch seconds>`: when it arrived, the tokens it charged, whether it got 429
(for load runs that read a server in another process)."""


class LLMServer:
    """The scriptable server. Thread-safe: scripts and the call log may be used while requests are served."""

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, *, latency: float = 0.0, rate_limit: RateLimit | None = None
    ) -> None:
        self.host = host
        self.port = port
        self.latency = latency
        """Seconds added to every call (benchmarks)."""
        self._lock = threading.Lock()
        self._limiter = Limiter(rate_limit) if rate_limit else None
        self._scripts: dict[tuple[str, str], deque[Behaviour]] = defaultdict(deque)
        self._calls: list[Call] = []
        self._in_flight = 0
        self._seq = itertools.count(1)
        self._response_ids = itertools.count(1)
        self._instance = uuid.uuid4().hex[:8]
        self._stopping = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """What OPENAI_BASE_URL should be set to."""
        return f"{self.url}/v1"

    def start(self) -> LLMServer:
        handler = type("Handler", (_Handler,), {"app": self})
        self._httpd = _HTTPServer((self.host, self.port), handler)
        self.port = self._httpd.server_address[1]
        self._stopping.clear()
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="llm-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes hanging calls
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> LLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- scripting and the call log --

    def script(self, report_id: str, step: Step | str, behaviours: Sequence[Behaviour]) -> None:
        """Queue behaviours for the next calls of (report id, step); once used up, calls answer `Correct()`."""
        with self._lock:
            self._scripts[(report_id, step_key(step))].extend(behaviours)

    def pending(self, report_id: str, step: Step | str) -> list[Behaviour]:
        """Scripted behaviours not consumed yet."""
        with self._lock:
            return list(self._scripts.get((report_id, step_key(step)), ()))

    def reset(self) -> None:
        """Forget scripts, the call log and the rate limit (between tests); latency is kept."""
        with self._lock:
            self._scripts.clear()
            self._calls.clear()
            self._limiter = None

    def limit_rate(self, limit: RateLimit | None) -> None:
        """Answer 429, like a provider, beyond `limit` per rolling window (None: no limit)."""
        with self._lock:
            self._limiter = Limiter(limit) if limit else None

    def peak(self, window: float = 60.0) -> Peak:
        """The most calls, and tokens charged, that arrived in any rolling `window` (whatever their answer)."""
        return peak(((c.received_at, c.prompt_tokens + c.completion_tokens) for c in self.calls()), window)

    def rate_limited_calls(self) -> list[Call]:
        """Calls the rate limit answered with 429."""
        return [c for c in self.calls() if c.rate_limited]

    @property
    def in_flight(self) -> int:
        """Requests being handled right now (received, not yet answered)."""
        with self._lock:
            return self._in_flight

    def _count_in_flight(self, delta: int) -> None:
        with self._lock:
            self._in_flight += delta

    def calls(self, report_id: str | None = None, step: Step | str | None = None) -> list[Call]:
        with self._lock:
            calls = list(self._calls)
        key = None if step is None else step_key(step)
        return [c for c in calls if report_id in (None, c.report_id) and key in (None, c.step)]

    def successful_calls(self, report_id: str | None = None, step: Step | str | None = None) -> list[Call]:
        return [c for c in self.calls(report_id, step) if c.successful]

    # -- request handling (runs on the server's threads) --

    def _next_behaviour(self, report_id: str, step: str) -> Behaviour:
        with self._lock:
            queue = self._scripts.get((report_id, step))
            return queue.popleft() if queue else Correct()

    def _record(self, call: Call) -> None:
        with self._lock:
            self._calls.append(call)

    def _respond(
        self,
        path: str,
        headers: Mapping[str, str],
        body: dict[str, Any],
        client_port: int = 0,
        received_at: float | None = None,
    ) -> _Reply:
        received_at = time.time() if received_at is None else received_at
        messages = [m for m in body.get("messages", []) if isinstance(m, dict)]
        response_format = (body.get("response_format") or {}).get("type")
        report_id = unquote(headers.get("x-report-id", ""))
        step = headers.get("x-report-step") or guess_step(messages, body)
        model = str(body.get("model", ""))

        admitted: Admitted | None = None
        limit_headers: dict[str, str] = {}
        with self._lock:
            if self._limiter is not None:
                max_completion = int(body.get("max_completion_tokens") or body.get("max_tokens") or 0)
                admitted, limit_headers = self._limiter.admit(received_at, _prompt_tokens(messages), max_completion)
                limited = admitted is None
            else:
                limited = False
        if limited:
            # The limit answers before any script: a scripted behaviour is left for the next admitted call.
            behaviour: Behaviour = Status(429, _RATE_LIMITED, limit_headers)
            reply = _Reply(429, _RATE_LIMITED, limit_headers)
        else:
            behaviour = self._next_behaviour(report_id, step)
            api_key = headers.get("authorization", "").removeprefix("Bearer ")
            offered = offered_quotes(body) if step == Step.EXTRACT.short else None
            reply = self._apply(behaviour, step, model, messages, response_format, api_key, offered)
            if admitted is not None:
                with self._lock:
                    admitted.completion = reply.completion_tokens
                reply = replace(reply, headers={**(reply.headers or {}), **limit_headers})
        self._record(
            Call(
                seq=next(self._seq),
                path=path,
                report_id=report_id,
                step=step,
                model=model,
                response_format=response_format,
                messages=messages,
                body=body,
                headers={k: ("***" if k == "authorization" else v) for k, v in headers.items()},
                behaviour=behaviour,
                status=reply.status,
                response_id=reply.response_id,
                successful=reply.correct and not isinstance(behaviour, Hang),
                received_at=received_at,
                client_port=client_port,
                prompt_tokens=reply.prompt_tokens,
                completion_tokens=reply.completion_tokens,
                rate_limited=limited,
            )
        )
        # Recorded before any delay, so a test sees the call as soon as its client gives up.
        if isinstance(behaviour, Hang):
            self._stopping.wait(behaviour.seconds)
        if self.latency and not limited:
            self._stopping.wait(self.latency)
        return reply

    def _apply(
        self,
        behaviour: Behaviour,
        step: str,
        model: str,
        messages: list[dict[str, Any]],
        response_format: str | None,
        api_key: str,
        offered: list[str] | None,
    ) -> _Reply:
        if isinstance(behaviour, Status):
            body = behaviour.body if behaviour.body is not None else _error_body(behaviour.code, api_key)
            return _Reply(behaviour.code, body, dict(behaviour.headers or {}))
        if isinstance(behaviour, RejectJsonSchema) and response_format == "json_schema":
            return _Reply(400, _REJECT_JSON_SCHEMA)
        if isinstance(behaviour, Malformed):
            return self._completion(model, messages, behaviour.content, correct=False)
        if isinstance(behaviour, Answer):
            content = behaviour.content if isinstance(behaviour.content, str) else json.dumps(behaviour.content)
            return self._completion(model, messages, content, correct=False)
        correct = behaviour if isinstance(behaviour, Correct) else Correct()
        try:
            answer = correct_answer(correct, step, messages, offered)
        except ValueError as err:
            return _Reply(400, {"error": {"message": str(err), "type": "invalid_request_error", "param": None}})
        return self._completion(model, messages, json.dumps(answer), correct=True, usage=correct.usage)

    def _completion(
        self,
        model: str,
        messages: list[dict[str, Any]],
        content: str,
        *,
        correct: bool,
        usage: Mapping[str, Any] | None = None,
    ) -> _Reply:
        # Unique across server instances too: tests match journaled ids against this server's log.
        response_id = f"chatcmpl-{self._instance}-{next(self._response_ids)}"
        prompt_tokens = _prompt_tokens(messages)
        completion_tokens = len(content) // 4 + 1
        body = {
            "id": response_id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": "fp_llm_server",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": dict(usage)
            if usage is not None
            else {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
        headers = {"x-request-id": f"req_{response_id}"}
        return _Reply(200, body, headers, response_id, correct, prompt_tokens, completion_tokens)


def _prompt_tokens(messages: list[dict[str, Any]]) -> int:
    """The server's token count of a prompt (about 4 characters a token, 4 more per message)."""
    return sum(len(str(m.get("content", ""))) // 4 + 4 for m in messages)


@dataclass(frozen=True)
class _Reply:
    status: int
    body: Mapping[str, Any] | str
    headers: Mapping[str, str] | None = None
    response_id: str | None = None
    correct: bool = False
    prompt_tokens: int = 0
    """The tokens the answer charged (0 for errors)."""
    completion_tokens: int = 0


_RATE_LIMITED = {
    "error": {
        "message": "Rate limit reached for test-model: the test server's rate limit (see x-ratelimit-* headers).",
        "type": "requests",
        "param": None,
        "code": "rate_limit_exceeded",
    }
}


_REJECT_JSON_SCHEMA = {
    "error": {
        "message": "response_format of type 'json_schema' is not supported by this model; use 'json_object' or 'text'",
        "type": "invalid_request_error",
        "param": "response_format",
        "code": "unsupported_parameter",
    }
}


def _error_body(code: int, api_key: str) -> dict[str, Any]:
    kind = {401: "invalid_api_key", 429: "rate_limit_exceeded"}.get(code)
    message = {
        # Echoes the credential it rejected, the worst a server can do: the client must not repeat it.
        401: f"Incorrect API key provided: {api_key}",
        429: "Rate limit reached for requests. Please try again later.",
    }.get(code, f"simulated HTTP {code}")
    return {"error": {"message": message, "type": kind or "server_error", "param": None, "code": kind}}


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # load tests open many connections at once

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that went away (a killed worker, an abandoned attempt) is expected, not a server error.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like a real API
    disable_nagle_algorithm = True  # headers and body go out in separate writes: avoid the delayed-ACK stall
    app: LLMServer

    def do_POST(self) -> None:
        self.app._count_in_flight(1)
        try:
            self._post()
        finally:
            self.app._count_in_flight(-1)

    def _post(self) -> None:
        received_at = time.time()
        path = self.path.split("?", 1)[0]
        body_bytes = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if path not in COMPLETION_PATHS:
            self._send(_Reply(404, {"error": {"message": f"no route {path}", "type": "invalid_request_error"}}))
            return
        try:
            body = json.loads(body_bytes)
            if not isinstance(body, dict):
                raise ValueError("the request body is not a JSON object")
        except ValueError as err:
            self._send(
                _Reply(400, {"error": {"message": f"invalid JSON body: {err}", "type": "invalid_request_error"}})
            )
            return
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            reply = self.app._respond(path, headers, body, self.client_address[1], received_at)
        except Exception as err:
            # A bug here must reach the test as a visible 500, not a dropped socket.
            log.exception("llm server failed to answer")
            reply = _Reply(500, {"error": {"message": f"llm server bug: {err!r}", "type": "server_error"}})
        self._send(reply)

    def do_GET(self) -> None:
        path, _, query = self.path.partition("?")
        if path == STATS_PATH:
            since = float(parse_qs(query).get("since", ["0"])[0])
            calls = [c for c in self.app.calls() if c.received_at >= since]
            arrivals = [{"at": c.received_at, "tokens": c.prompt_tokens + c.completion_tokens,
                         "rate_limited": c.rate_limited} for c in calls]  # fmt: skip
            self._send(_Reply(200, {"calls": arrivals}))
        elif path in ("/v1/models", "/models"):
            model = {"id": "llm-server", "object": "model", "created": 0, "owned_by": "tests"}
            self._send(_Reply(200, {"object": "list", "data": [model]}))
        else:
            self._send(_Reply(404, {"error": {"message": f"no route {self.path}", "type": "invalid_request_error"}}))

    def _send(self, reply: _Reply) -> None:
        is_text = isinstance(reply.body, str)
        payload = (reply.body if isinstance(reply.body, str) else json.dumps(reply.body)).encode()
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", "text/plain" if is_text else "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in (reply.headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a Hang past its timeout)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)
