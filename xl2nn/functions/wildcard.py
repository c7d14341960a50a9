"""Excel's wildcards, one reading for MATCH, VLOOKUP, HLOOKUP, SEARCH and the *IF(S) criteria."""
from __future__ import annotations

import re
from functools import lru_cache


@lru_cache(maxsize=1024)
def wildcard(pattern: str) -> re.Pattern[str]:
    """A pattern as a regex (search or fullmatch it): * any run, ? one character, ~ the next
    character literally (~* ~? ~~ as Excel documents; before any other character too, as
    LibreOffice reads it: "x~y" is "xy"), a final ~ itself. Case does not matter."""
    out, i = [], 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "~" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if ch == "*" else "." if ch == "?" else re.escape(ch))
        i += 1
    return re.compile("".join(out), re.IGNORECASE | re.DOTALL)
