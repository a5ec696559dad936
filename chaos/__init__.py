"""Chaos soak: run the whole pipeline under combined, seeded faults and prove nothing is lost.

`python -m chaos --help` (or `make chaos`). Modules:
- schedule: the seeded fault schedule (LLM faults per call, process kills over time);
- inputs: the seeded input records (valid reports and poison);
- sender: sends them at a steady pace and learns each record's report id;
- llm_faults: the test LLM server driven by the schedule;
- injector: kills and restarts stack processes on schedule;
- observe: reads every output record and Restate's invocation states;
- accounting: pure rules that turn inputs, outputs and the LLM call log into a verdict;
- run: the orchestration.
"""
