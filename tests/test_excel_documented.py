"""Where LibreOffice departs from Excel's documented behaviour, xl2nn follows Excel; these
cases are checked against the values Excel's documentation gives."""
from __future__ import annotations

import math

import pytest

from xl2nn.api import load
from xl2nn.cells import CellError
from xl2nn.compiler.grid import recalculate

CASES = {
    # ATAN2: "If both x_num and y_num are 0, ATAN2 returns the #DIV/0! error value." (LibreOffice: 0)
    "=ATAN2(0,0)": CellError("#DIV/0!"),
    "=ATAN2(1,1)": math.pi / 4,
    # SUMX2MY2 & co.: "text, logical values, or empty cells ... are ignored", pair by pair
    # (LibreOffice counts TRUE as 1).
    "=SUMX2MY2(A1:A3,B1:B3)": (2 * 2 - 1) + 0 + 0,
    "=SUMXMY2(A1:A3,C1:C3)": (2 - 5) ** 2,
    "=SUMX2PY2(A1:A3,B1:B2)": CellError("#N/A"),            # different sizes
}


@pytest.fixture(scope="module")
def values(tmp_path_factory):
    from openpyxl import Workbook
    d = tmp_path_factory.mktemp("doc")
    wb = Workbook()
    ws = wb.active
    ws.title = "s"
    for r, row in enumerate([[2, 1, 5], [True, 3, "x"], [4, None, True]], start=1):
        for c, v in enumerate(row, start=1):
            if v is not None:
                ws.cell(r, c, v)
    for i, formula in enumerate(CASES, start=1):
        ws.cell(i, 6, formula)
    wb.save(d / "doc.xlsx")
    wbx, graph = load(d / "doc.xlsx")
    recalc = recalculate(wbx, graph)
    return {formula: recalc.grids.value("s", i, 6) for i, formula in enumerate(CASES, start=1)}


@pytest.mark.parametrize("formula", sorted(CASES))
def test_documented_value(values, formula):
    want, got = CASES[formula], values[formula]
    if isinstance(want, CellError):
        assert got == want
    else:
        assert got == pytest.approx(want, rel=1e-15)
