"""Command-line tools around the worker: send reports, read results."""
