"""Flow control toward LLM providers: request and token budgets per model, shared by every worker.

- `window`: the pure bookkeeping (grants, occupancy, reservations, pacing, 429s) and why it holds.
- `service`: the Restate virtual object `LLMBudget` that keeps one model's budget.
- `permit`: the last check before a request leaves (one grant, one request, in time).
- `gate`: what a chain link does around each LLM attempt (wait for a grant, claim it, settle it).

The names below show in Restate's journals and state, where `status` reads them.
"""

OBJECT = "LLMBudget"
STATE = "budget"
"""The one state key of an LLMBudget object."""
WAIT_NAME = "Wait for LLM budget"
"""The durable sleep of a call waiting for its model's budget."""
CLAIM_NAME = "Claim LLM budget"
"""The journaled marker of the attempt that may send with a grant."""
