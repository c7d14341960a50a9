"""A formula's R1C1 shape, read off its text without parsing it.

Copied formulas that were not saved as shared formulas (openpyxl, many generators) arrive
as one text per cell: `=($A4-AG4)^2`, `=($A5-AG5)^2`, ... Their shapes are equal exactly
when their texts are equal after each A1 reference is rewritten relative to the cell, so
the parser runs once per shape, not once per cell.
"""
from __future__ import annotations

import re

from ..cells import A1_TOKEN, MAX_COL, MAX_ROW, col_number


def shape_key(text: str, row: int, col: int) -> str:
    """`text` with every A1 reference made relative to (row, col): equal keys, equal shapes."""
    def rel(m: re.Match) -> str:
        if m.group(2) is not None:                    # a row range 4:7
            a1, r1, a2, r2 = m.group(1, 2, 3, 4)
            if not (1 <= int(r1) <= MAX_ROW and 1 <= int(r2) <= MAX_ROW):
                return m.group(0)
            return "\0" + "".join(f"R{r}" if a else f"R[{int(r) - row}]" for a, r in ((a1, r1), (a2, r2))) + "\0"
        if m.group(6) is None:
            return m.group(0)
        c_abs, letters, r_abs, digits = m.group(5, 6, 7, 8)
        c, r = col_number(letters), int(digits)
        if c > MAX_COL or r > MAX_ROW or r < 1:
            return m.group(0)               # not a cell: a name such as ZZZ1
        rk = f"R{r}" if r_abs else f"R[{r - row}]"
        ck = f"C{c}" if c_abs else f"C[{c - col}]"
        return "\0" + rk + ck + "\0"
    return A1_TOKEN.sub(rel, text)
