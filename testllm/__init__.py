"""The test LLM server: a real OpenAI-compatible HTTP server that tests, `make bench` and
`make chaos` script per (report id, step) and whose call log they read back.

    from testllm import LLMServer, Status, Correct
    with LLMServer() as server:
        server.script("r1", "extract", [Status(500), Correct()])

`python -m testllm --port 8765 --latency 0.2` serves it for load runs; `server.limit_rate(RateLimit(...))`
(or `--requests-per-minute N`) makes it answer 429 beyond a provider-style limit, and `server.peak()`
measures the most calls and tokens that arrived in any rolling minute.
"""

from testllm.behaviours import Answer, Behaviour, Call, Correct, Hang, Malformed, RejectJsonSchema, Status
from testllm.ratelimit import Peak, RateLimit, peak
from testllm.server import LLMServer

__all__ = [
    "Answer",
    "Behaviour",
    "Call",
    "Correct",
    "Hang",
    "LLMServer",
    "Malformed",
    "Peak",
    "RateLimit",
    "RejectJsonSchema",
    "Status",
    "peak",
]
