"""The test LLM server's own answers: the labelled corpus from its labels, other reports from the quotes
offered, neither through the code under test. Asked over real HTTP through the OpenAI provider."""

from __future__ import annotations

import asyncio
import subprocess
import sys

from pydantic import SecretStr

from devstack.config import REPO_ROOT
from evaluation import load_corpus
from testllm import LLMServer
from testllm.answers import quotes_for, significant_digits
from worker.models import Metric, Step
from worker.prompts import QuotesAnswer
from worker.providers.base import CallInfo
from worker.providers.openai_compat import OpenAIProvider
from worker.quotes import QuotedMetric, candidates, resolve
from worker.settings import Settings


def ask_extract(reports: list[tuple[str, str]]) -> list[QuotesAnswer]:
    """The server's extract answer to each (report id, text), asked as the worker asks (the quotes enum)."""
    with LLMServer() as server:
        provider = OpenAIProvider(
            Settings(openai_api_key=SecretStr("sk-test"), openai_base_url=server.base_url, llm_provider="openai")
        )

        async def ask() -> list[QuotesAnswer]:
            try:
                answers = []
                for report_id, text in reports:
                    call = CallInfo(report_id=report_id, step=Step.EXTRACT)
                    answers.append((await provider.extract(text, candidates(text), call)).value)
                return answers
            finally:
                await provider.aclose()

        answers = asyncio.run(ask())
        assert [c.step for c in server.calls()] == ["extract"] * len(reports)
        return answers


def test_every_labelled_report_is_answered_with_its_labels() -> None:
    corpus = load_corpus()
    answers = ask_extract([(r.id, r.message) for r in corpus])
    for report, answer in zip(corpus, answers, strict=True):
        items = [QuotedMetric(**item.model_dump()) for item in answer.metrics]
        resolved = resolve(report.message, items)
        assert resolved.rejected == [], (report.id, resolved.rejected)
        # The worker reads the values at the quotes: they must be the labelled ones.
        assert sorted(m.value for m in resolved.metrics) == sorted(m.value for m in report.expected), report.id
        assert {m.name for m in report.expected} >= {m.name for m in resolved.metrics}, report.id


def test_another_report_gets_every_offered_quote_under_plain_names() -> None:
    text = "Week 9 in the bakery: 412 loaves sold, flour up 7%, and the oven ran 61 hours."
    [answer] = ask_extract([("r-other", text)])
    assert [(i.name, i.quote) for i in answer.metrics] == [
        (f"Metric {n}", quote) for n, quote in enumerate(candidates(text), start=1)
    ]


def test_labels_find_their_quotes_by_significant_digits() -> None:
    assert significant_digits("$48.3M") == significant_digits("48300000.0") == "483"
    assert significant_digits("0.07%") == "7" and significant_digits("3,1 %") == "31"
    labels = [
        Metric(name="Delivery time (low)", value=10, unit="days"),
        Metric(name="Delivery time (high)", value=12, unit="days"),
        Metric(name="Share", value=12, unit="%"),
    ]
    # A range's two ends share its quote; a percentage takes the quote with the percent sign.
    assert quotes_for(labels, ["10-12 days", "12%"]) == [
        {"name": "Delivery time", "quote": "10-12 days", "unit": "days"},
        {"name": "Share", "quote": "12%", "unit": "%"},
    ]


def test_the_answers_do_not_use_the_code_under_test() -> None:
    probe = (
        "import sys; from testllm import LLMServer; from testllm.answers import extract_answer; "
        "extract_answer('Revenue was $12.5M.', None); "
        "print(sorted(m for m in sys.modules if m.startswith('worker')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "['worker', 'worker.models', 'worker.prompts']"
