"""A local Kafka + Restate + worker stack as plain processes (no Docker)."""
