"""Excel 365's formula features: LET, LAMBDA (inline and as workbook names), MAP, spill
references (A1#, saved as ANCHORARRAY), the @ operator.

The LibreOffice here (7.x) computes none of them, so each formula sits beside its
expansion in plain Excel (`=LET(x,A1*2,x+1)` beside `=A1*2+1`): LibreOffice computes the
expansions, and xl2nn's value of each 365 formula must equal LibreOffice's value of its
expansion, cell by cell, as the formulas are copied down.
"""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from xl2nn.api import load
from xl2nn.cells import CellError
from xl2nn.compiler.grid import recalculate
from .libreoffice import find_soffice, recalculate as lo_recalculate

ROWS = 5
# (365 formula, its expansion), each copied down rows 1..ROWS; data in A:C.
# (I1:I4 is an array formula =SEQUENCE(4) that LibreOffice 7 cannot compute: the pair that
# sums it checks xl2nn's value of it, 1+2+3+4.)
PAIRS = [
    ("=_xlfn.LET(_xlpm.x,A1*2,_xlpm.y,_xlpm.x+B1,_xlpm.y*_xlpm.x)", "=(A1*2+B1)*(A1*2)"),
    ("=_xlfn.LET(_xlpm.Rate,$C$1,_xlpm.rate*A1+_xlpm.RATE)", "=$C$1*A1+$C$1"),          # names ignore case
    ("=_xlfn.LET(_xlpm.x,A1,_xlfn.LET(_xlpm.x,_xlpm.x+1,_xlpm.x*10))", "=(A1+1)*10"),   # shadowing
    ("=_xlfn.LAMBDA(_xlpm.a,_xlpm.b,_xlpm.a*_xlpm.a+_xlpm.b)(A1,B1)", "=A1*A1+B1"),
    ("=RELU(A1-B1)", "=MAX(0,A1-B1)"),                                                    # a LAMBDA name
    ("=SIGMOID(A1)+RELU(B1)", "=1/(1+EXP(-A1))+MAX(0,B1)"),
    ("=SUM(_xlfn.MAP($A$1:$C$1,_xlfn.LAMBDA(_xlpm.v,_xlpm.v*_xlpm.v+A1)))", "=SUMPRODUCT($A$1:$C$1,$A$1:$C$1)+3*A1"),
    ("=SUM(_xlfn.ANCHORARRAY($H$1))", "=SUM($H$1:$H$3)"),
    ("=SUMPRODUCT(_xlfn.ANCHORARRAY($H$1),$A$1:$A$3)", "=SUMPRODUCT($H$1:$H$3,$A$1:$A$3)"),
    ("=SUM(_xlfn.SEQUENCE(3,2,A1,B1))", "=6*A1+15*B1"),
    ("=SUMPRODUCT(_xlfn.SEQUENCE(1,3),$A$1:$C$1)", "=$A$1+2*$B$1+3*$C$1"),
    ("=SUM(_xlfn.ANCHORARRAY($I$1))*A1", "=10*A1"),
]
DATA = [[1.5, -2.0, 0.5], [2.0, 3.0, -1.0], [-0.5, 1.0, 2.0], [4.0, -3.0, 0.25], [0.0, 2.5, 1.0]]
NAMES = {"RELU": "_xlfn.LAMBDA(_xlpm.x,MAX(0,_xlpm.x))",
         "SIGMOID": "_xlfn.LAMBDA(_xlpm.z,1/(1+EXP(-_xlpm.z)))"}


def _col(i: int) -> str:
    from openpyxl.utils import get_column_letter
    return get_column_letter(i)


@pytest.fixture(scope="module")
def judged(tmp_path_factory) -> Path:
    from openpyxl import Workbook
    from openpyxl.workbook.defined_name import DefinedName
    from openpyxl.worksheet.formula import ArrayFormula
    d = tmp_path_factory.mktemp("dyn")
    wb = Workbook()
    ws = wb.active
    ws.title = "s"
    for r, row in enumerate(DATA, start=1):
        for c, v in enumerate(row, start=1):
            ws.cell(r, c, v)
    ws["H1"] = ArrayFormula("H1:H3", "=A1:A3*2+B1:B3")          # the arrays that spill
    ws["I1"] = ArrayFormula("I1:I4", "=_xlfn.SEQUENCE(4)")
    for k, (new, old) in enumerate(PAIRS):
        for r in range(1, ROWS + 1):
            ws.cell(r, 10 + 2 * k).value = _shift(new, r - 1)
            ws.cell(r, 11 + 2 * k).value = _shift(old, r - 1)
    for name, text in NAMES.items():
        wb.defined_names[name] = DefinedName(name, attr_text=text)
    src = d / "dynamic.xlsx"
    wb.save(src)
    if find_soffice() is None:
        return src
    out = d / "dynamic.lo.xlsx"
    lo_recalculate(src, out)
    return out


def _shift(formula: str, down: int) -> str:
    """The formula as copied `down` rows: relative row numbers of A..C move."""
    import re
    return re.sub(r"(?<![$A-Z_.])([A-C])(\d+)(?!\d)", lambda m: f"{m.group(1)}{int(m.group(2)) + down}", formula)


@pytest.mark.skipif(find_soffice() is None, reason="LibreOffice (soffice) is not installed")
def test_365_formulas_equal_libreoffice_on_their_expansions(judged):
    wb, graph = load(judged)
    recalc = recalculate(wb, graph)
    assert not recalc.skipped
    cached = wb.sheets["s"].values
    for k in range(len(PAIRS)):
        for r in range(1, ROWS + 1):
            want = cached.get((r, 11 + 2 * k))          # LibreOffice's value of the expansion
            assert isinstance(want, float), (PAIRS[k][1], r, want)
            for c in (10 + 2 * k, 11 + 2 * k):
                got = recalc.grids.value("s", r, c)
                assert isinstance(got, float) and math.isclose(got, want, rel_tol=1e-12, abs_tol=1e-12), \
                    (PAIRS[k], r, c, want, got)


def test_inlined_formulas_are_one_family_per_column(judged):
    wb, graph = load(judged)
    for k, (new, _) in enumerate(PAIRS):
        fam = graph.family_at("s", 1, 10 + 2 * k)
        assert set(fam.rows.tolist()) == set(range(1, ROWS + 1)), (new, str(fam.area))   # one op, all rows
        assert fam.formula_at(1, 10 + 2 * k).startswith("=")


def test_map_that_aggregates_is_computed_entry_by_entry(tmp_path):
    """MAP with a body that reads its argument as a whole (SUM of it) applies the body to each
    entry on its own (functions/arrays.py), not to the whole array at once."""
    from openpyxl import Workbook
    wb = Workbook()
    ws = wb.active
    ws.title = "s"
    ws["A1"], ws["A2"] = 1, 2
    ws["B1"] = "=SUM(_xlfn.MAP(A1:A2,_xlfn.LAMBDA(_xlpm.v,SUM(_xlpm.v)+1)))"
    ws["B2"] = "=A1+1"
    src = tmp_path / "map.xlsx"
    wb.save(src)
    wbx, graph = load(src)
    recalc = recalculate(wbx, graph)
    assert not recalc.skipped and not graph.problems
    assert recalc.grids.value("s", 1, 2) == (1 + 1) + (2 + 1)
    assert recalc.grids.value("s", 2, 2) == 2.0


def test_at_operator_intersects_inside_an_array_formula(tmp_path):
    from openpyxl import Workbook
    from openpyxl.worksheet.formula import ArrayFormula
    wb = Workbook()
    ws = wb.active
    ws.title = "s"
    for r in range(1, 4):
        ws[f"A{r}"] = r * 10
        ws[f"B{r}"] = ArrayFormula(f"B{r}", "=SUM(@A1:A3+A1:A3)")   # @ takes row r's A; the rest stays whole
    src = tmp_path / "at.xlsx"
    wb.save(src)
    wbx, graph = load(src)
    recalc = recalculate(wbx, graph)
    for r in range(1, 4):
        assert recalc.grids.value("s", r, 2) == 3 * r * 10 + 60


def test_spill_of_a_missing_array_is_ref_error(tmp_path):
    from openpyxl import Workbook
    wb = Workbook()
    ws = wb.active
    ws.title = "s"
    ws["A1"] = 1
    ws["B1"] = "=SUM(_xlfn.ANCHORARRAY(A1))"
    src = tmp_path / "spill.xlsx"
    wb.save(src)
    wbx, graph = load(src)
    assert isinstance(recalculate(wbx, graph).grids.value("s", 1, 2), CellError)


def test_spill_operator_as_typed(tmp_path):
    """Files store A1# as ANCHORARRAY(A1); a workbook written by a program may hold A1# itself."""
    from openpyxl import Workbook
    from openpyxl.worksheet.formula import ArrayFormula
    wb = Workbook()
    ws = wb.active
    ws.title = "s"
    ws["A1"] = ArrayFormula("A1:A4", "=_xlfn.SEQUENCE(4,1,10,5)")     # 10, 15, 20, 25
    ws["B1"] = "=SUM(A1#)*2"
    ws["B2"] = "=SUM(B1#)"                                               # B1 spills nothing
    src = tmp_path / "typed.xlsx"
    wb.save(src)
    wbx, graph = load(src)
    recalc = recalculate(wbx, graph)
    assert recalc.grids.value("s", 1, 2) == 140.0
    assert recalc.grids.value("s", 2, 2) == CellError("#REF!")
