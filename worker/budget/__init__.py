"""Flow control toward LLM providers: request and token budgets per model, shared by every worker.

- `window`: the pure bookkeeping (grants, occupancy, waiting, adapting to 429s) and why it holds.
- `service`: the Restate virtual object `LLMBudget` that keeps one model's budget.
- `gate`: what a handler calls around each LLM attempt (wait for a grant, then settle it).
"""
