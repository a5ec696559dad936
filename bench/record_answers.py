"""`python -m bench.record_answers`: record a real model's raw answers to the step contracts, as test data.

Starts llama.cpp's server with the local model (as the stack does), asks it each step's question for
the first N labelled reports with the prompts and schemas the worker sends, and writes every raw
answer (good or bad) to tests/data/recorded_answers.jsonl. tests/test_recorded_answers.py checks
the contracts' validation against them, so the rules are tested on what a real small model writes.

Per report: extract with the shipped schema (quotes an enum of the report's quantities) and in JSON
mode (free quotes: what a server without schema support gets), sort and format of its labelled metrics.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from openai import OpenAI

from devstack.config import CACHE_DIR, REPO_ROOT
from devstack.localmodel import ModelSpec, model_alias, resolve_model
from devstack.processes import ManagedProcess
from evaluation import LabelledReport, load_corpus
from worker.prompts import (
    EXTRACT_PROMPT,
    EXTRACT_SHOT,
    FORMAT_PROMPT,
    FORMAT_SHOT,
    REPORT_TAG,
    SORT_PROMPT,
    SORT_SHOT,
    delimit,
    extract_schema,
    format_schema,
    metrics_block,
    sort_schema,
)
from worker.providers.openai_compat import build_messages
from worker.quotes import candidates

OUT = REPO_ROOT / "tests" / "data" / "recorded_answers.jsonl"


def _ask(client: OpenAI, messages: list[Any], name: str, schema: dict[str, Any] | None) -> str:
    response_format: Any = (
        {"type": "json_object"}
        if schema is None
        else {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}
    )
    completion = client.chat.completions.create(
        model="local",
        messages=messages,
        temperature=0,
        max_tokens=1000,
        extra_body={"response_format": response_format},
    )
    return completion.choices[0].message.content or ""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.record_answers", description=__doc__.split("\n")[0])
    parser.add_argument("--reports", type=int, default=12, help="the first N labelled reports (default 12)")
    parser.add_argument("--ids", help="comma-separated report ids instead of the first N")
    parser.add_argument("--append", action="store_true", help="add to the output file instead of replacing it")
    parser.add_argument("--port", type=int, default=18990, help="port for the model server (default 18990)")
    parser.add_argument("--out", type=Path, default=OUT, help=f"output file (default {OUT.relative_to(REPO_ROOT)})")
    args = parser.parse_args(argv)

    model = resolve_model(ModelSpec.from_env())
    server = ManagedProcess("record-llm", CACHE_DIR / "record-answers", [args.port], marker="-m devstack.llamacpp")
    argv_ = [sys.executable, "-m", "devstack.llamacpp", "--model", str(model), "--port", str(args.port)]
    server.start(argv_, {**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    try:
        deadline = time.monotonic() + 180
        while not _healthy(args.port):
            if time.monotonic() > deadline:
                raise SystemExit(f"the model server did not start; see {server.log_file}")
            time.sleep(0.5)
        client = OpenAI(base_url=f"http://127.0.0.1:{args.port}/v1", api_key="local", max_retries=0, timeout=600)
        corpus = load_corpus()
        wanted = args.ids.split(",") if args.ids else None
        reports = [r for r in corpus if r.id in wanted] if wanted else corpus[: args.reports]
        header = {"model": model_alias(model), "recorded": time.strftime("%Y-%m-%d"), "temperature": 0}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        if not (args.append and args.out.exists()):
            args.out.write_text(json.dumps({"header": header}) + "\n", encoding="utf-8")
        written = 0

        def record(report: LabelledReport) -> list[dict[str, str]]:
            records = []
            text = report.message
            data = delimit(REPORT_TAG, text)
            for variant, schema in (("schema", extract_schema(candidates(text))), ("json_mode", None)):
                messages = build_messages(EXTRACT_PROMPT, EXTRACT_SHOT, data, None)
                content = _ask(client, messages, "quoted_metrics", schema)
                records.append({"step": "extract", "variant": variant, "report_id": report.id, "content": content})
            metrics = report.expected
            if len(metrics) >= 2:
                messages = build_messages(SORT_PROMPT, SORT_SHOT, metrics_block(metrics), None)
                content = _ask(client, messages, "metric_order", sort_schema(len(metrics)))
                records.append({"step": "sort", "variant": "schema", "report_id": report.id, "content": content})
            if metrics:
                messages = build_messages(FORMAT_PROMPT, FORMAT_SHOT, metrics_block(metrics), None)
                content = _ask(client, messages, "table_rows", format_schema(len(metrics)))
                records.append({"step": "format", "variant": "schema", "report_id": report.id, "content": content})
            return records

        # As many at once as the server has slots; written as they come, so a long run keeps what it has.
        with ThreadPoolExecutor(max_workers=2) as pool:
            for report, records in zip(reports, pool.map(record, reports), strict=True):
                with args.out.open("a", encoding="utf-8") as out:
                    out.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
                written += len(records)
                print(f"recorded {report.id}", flush=True)
        print(f"{written} answers written to {args.out}")
    finally:
        server.stop()
    return 0


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


if __name__ == "__main__":
    sys.exit(main())
