"""Text from records and journals, made safe to print on a terminal.

Report ids, metric names and error texts come from input anyone can write: an escape
sequence in an id could clear the screen or recolour what follows, and a lone surrogate
cannot be written to a UTF-8 terminal at all. Both are shown as Python-style escapes.
"""

from __future__ import annotations

import unicodedata

# Control (Cc), format (Cf: bidirectional overrides, zero-width marks), surrogate (Cs),
# and line/paragraph separators (Zl, Zp).
_UNSAFE = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def printable(text: str, *, keep: str = "") -> str:
    """`text` with every unsafe character (except those in `keep`, e.g. "\\n") escaped."""
    if text.isprintable():  # the common case, at C speed: no Cc, Cf, Cs, Zl, Zp in it
        return text
    return "".join(
        c if c in keep or unicodedata.category(c) not in _UNSAFE else c.encode("unicode_escape").decode("ascii")
        for c in text
    )
