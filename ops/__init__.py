"""Reading and operating the pipeline: `report-results` (results reader), `report-status`
(pipeline status), `report-replay` (dead letters back to the input topic)."""
