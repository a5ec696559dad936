"""The report-chain worker: a Restate service that turns report messages from
Kafka into markdown tables, one durable step at a time."""
