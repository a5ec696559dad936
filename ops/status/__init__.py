"""`report-status` (`python -m ops.status`): how is the pipeline doing, and where is work stuck?

Two sources, both read-only:

- Restate's SQL introspection (`POST <admin>/query`): invocations of `ReportChain/process` by
  status, the oldest one still in flight, every paused one with its last failure, and per-step
  latency percentiles from the journal. Everything is aggregated in SQL (GROUP BY, percentile_cont)
  and detail queries are LIMITed, so the answer stays fast with many invocations.
- Kafka: records on the tables and dead-letter topics (admin client, end offsets), and the lag of
  the subscription's consumer group on the input topic (its committed offsets vs. end offsets).

Counting rules: an invocation still in flight is counted whatever its age; a completed one when it
completed inside the window (`--since`). Kafka record counts are what the topics retain.

Step latency: Restate appends a step's `Command: Run` entry when the worker starts the step and
the matching `Notification: Run` when its result is durable, each with `appended_at` (ms). The
latency of a step is the time between those two consecutive journal entries (index i and i + 1):
the worker's time including every retry of that step (a publish that waited for a paused invocation
to be resumed counts the pause too). The notification directly follows its command in handlers that
await each step before starting the next, as ReportChain does. Steps still running are not counted.

Exit codes: 0 ok; 1 Restate or Kafka could not be reached (the message names the address);
2 usage error. With --watch, Ctrl-C exits 0.

Modules: models (the report), restate (SQL queries and the admin client), journal (rows into
models), kafka (topic records and consumer-group lag), collect (one snapshot), render (text),
cli (the command).
"""
