"""Reference functions: OFFSET, INDIRECT, ROW, COLUMN, ADDRESS, and the range operator.

OFFSET and INDIRECT return references, not values: where they land is worked out from
their position arguments when the formula is computed (compiler/references.py), and the
cells there are read as any reference's are. Excel calls them volatile because it cannot
know their targets before computing; xl2nn computes the positions first and then knows.
ROW and COLUMN read a reference's position, never its cells. These are evaluated by the
interpreter itself (it holds the formula's cells and the workbook), so their entries here
only give their parameter classes and mark them supported.

RANGE is the ':' operator between references that are not plain ranges
(`A1:INDEX(A1:A10,n)`, `INDIRECT(a):INDIRECT(b)`): the parser writes it as this call.

ADDRESS is a plain text function.
"""
from __future__ import annotations

import math
import re
from typing import Any

from ..cells import MAX_COL, MAX_ROW, CellError, col_letters
from .registry import Context, argument, excel
from .text import elementwise
from .values import VALUE, Val, to_bool, to_number, to_text

# Calls whose value is a reference (their cells are read), computed by the interpreter.
REFERENCE_CALLS = frozenset({"OFFSET", "INDIRECT", "RANGE"})
# Calls that may pass a reference through (INDEX's cell, CHOOSE's and IF's pick): where a
# reference is wanted (OFFSET's base, the ':' operator, ROW) they give one.
PASSING_CALLS = frozenset({"INDEX", "CHOOSE", "IF"})
# Calls that read their argument's position only (no cell of it).
POSITION_CALLS = frozenset({"ROW", "COLUMN"})


def _interpreted(name: str):
    def impl(args: list[Val | None], ctx: Context) -> Val:
        raise RuntimeError(f"{name} is computed by the interpreter (compiler/references.py)")
    return impl


excel("OFFSET", "Lookup & Reference", min_args=3, max_args=5, args="RVVVV")(_interpreted("OFFSET"))
excel("INDIRECT", "Lookup & Reference", min_args=1, max_args=2, differentiable=False,
      args="VV")(_interpreted("INDIRECT"))
excel("RANGE", "Lookup & Reference", min_args=2, max_args=2, args="RR")(_interpreted("RANGE"))
excel("ROW", "Lookup & Reference", max_args=1, differentiable=False, args="R")(_interpreted("ROW"))
excel("COLUMN", "Lookup & Reference", max_args=1, differentiable=False, args="R")(_interpreted("COLUMN"))


# -- ADDRESS ------------------------------------------------------------------------------

# A sheet name ADDRESS writes without quotes (LibreOffice's rule: letters, digits, underscore).
_PLAIN_SHEET = re.compile(r"^\w+$")


def _whole(x: Any) -> int | CellError:
    n = to_number(x)
    if isinstance(n, CellError):
        return n
    return math.trunc(max(min(n, 2.0 ** 40), -2.0 ** 40))


def _address(row: int, col: int, abs_num: int, a1: bool, sheet: str | None) -> object:
    """Excel's ADDRESS of whole numbers: '$B$3', 'B$3', '$B3', 'B3'; R1C1 'R3C2', 'R3C[2]',
    'R[3]C2', 'R[3]C[2]' (the numbers as given: ADDRESS knows no formula cell)."""
    if not (1 <= row <= MAX_ROW and 1 <= col <= MAX_COL) or abs_num not in (1, 2, 3, 4):
        return VALUE
    row_abs, col_abs = abs_num in (1, 2), abs_num in (1, 3)
    if a1:
        text = ("$" if col_abs else "") + col_letters(col) + ("$" if row_abs else "") + str(row)
    else:
        text = f"R{row}" if row_abs else f"R[{row}]"
        text += f"C{col}" if col_abs else f"C[{col}]"
    if not sheet:
        return text
    if not _PLAIN_SHEET.match(sheet):
        sheet = "'" + sheet.replace("'", "''") + "'"
    return f"{sheet}!{text}"


def _address_of(row: Any, col: Any, abs_num: Any, a1: Any, sheet: Any) -> object:
    parts = (_whole(row), _whole(col), _whole(abs_num), to_bool(a1),
             None if sheet is None else to_text(sheet))
    for p in parts:
        if isinstance(p, CellError):
            return p
    return _address(*parts)  # type: ignore[arg-type]


def _raw(x: Any) -> Any:
    return x


@excel("ADDRESS", "Lookup & Reference", min_args=2, max_args=5, differentiable=False)
def address(args: list[Val | None], ctx: Context) -> Val:
    # abs_num and a1 omitted, or written but left empty (ADDRESS(r,c,,,"Sheet2")): 1 and TRUE.
    vals = [argument(args, 0, ctx), argument(args, 1, ctx), argument(args, 2, ctx, 1.0, 1.0),
            argument(args, 3, ctx, True, True), argument(args, 4, ctx)]
    return elementwise(_address_of, vals, [_raw] * 5, ctx)


__all__ = ["PASSING_CALLS", "POSITION_CALLS", "REFERENCE_CALLS", "address"]
