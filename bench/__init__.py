"""Benchmarks: `make bench` / `python -m bench --help`.

One run starts its own local stack (ports shifted by 10500, run directory
`.run/bench-10500`), so it never disturbs `make up` or a test session, and measures,
in the same run and on the same machine:

1. the Kafka floor: a plain consume -> transform -> produce loop (bench/kafka_floor.py);
2. the engine floor: a minimal Restate service with no-op journaled steps (bench/engine_floor.py);
3. the worker with the offline provider;
4. the worker with the OpenAI provider against the test LLM server, at several levels of reports in flight;

plus low-load latency and, with `--soak`, the worker's RSS over 20,000 reports.
Results go to stdout and to docs/benchmarks.md (bench/report.py).
"""
