"""Excel 365's dynamic arrays as Excel saves them: spill chains, named LAMBDAs with arguments,
MAKEARRAY, BYROW, BYCOL, REDUCE, SCAN, MAP over aggregating bodies, HSTACK, VSTACK, TAKE,
DROP, CHOOSECOLS, CHOOSEROWS, SORT, SORTBY, FILTER, UNIQUE, TOCOL, TOROW.

LibreOffice 7.4 has none of them. So each case is written twice with the same data: once in
plain Excel, one formula per cell of what the 365 formula spills (`=A1*2` for each cell of
`=A1:A6*2`, INDEX/SMALL array formulas for SORT and FILTER), which LibreOffice recalculates;
and once in Excel 365's saved form (tests/excel365.py: t="array" ref=SPILL cm="1" with
xl/metadata.xml's XLDAPR property, _xlfn./_xlws. prefixes, _xlpm. parameters, ANCHORARRAY),
its cached values LibreOffice's values of the expansion. xl2nn's recalculation of the 365
file must equal them cell by cell (rel 1e-9, errors as errors). Where LibreOffice cannot say
(#CALC!, Excel's ordering of mixed types) the value Excel documents is written instead.
"""
from __future__ import annotations

import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

from xl2nn.api import compile_workbook, load
from xl2nn.cells import CellError
from xl2nn.compiler.grid import recalculate
from xl2nn.errors import UnsupportedFormula

from .conftest import agrees
from .excel365 import Formula, spill_cells, write_excel365
from .libreoffice import find_soffice, recalculate as lo_recalculate

NA = CellError("#N/A")
CALC = CellError("#CALC!")
VALUE = CellError("#VALUE!")
REF = CellError("#REF!")

# The data every case sheet holds.
A = [3.0, -1.0, 4.0, 1.5, -2.0, 0.5]
B = [2.0, 7.0, -3.0, 0.25, 5.0, 1.0]
C = ["pear", "apple", "fig", "banana", "kiwi", "cherry"]
D = [1.0, 2.0, 1.0, 3.0, 2.0, 1.0]
DATA: dict[str, object] = {}
for _r in range(6):
    DATA[f"A{_r + 1}"], DATA[f"B{_r + 1}"], DATA[f"C{_r + 1}"], DATA[f"D{_r + 1}"] = A[_r], B[_r], C[_r], D[_r]
DATA.update({"X1": "a", "X2": "B", "X3": "A", "X4": "b",      # UNIQUE ignores case
             "Y1": 1.0, "Z2": 4.0,                             # Y2, Z1 blank: TOROW(..., 1)
             "W1": 5.0, "W3": 6.0})                            # W2 =1/0: TOCOL(..., 2)
ERRORS = {"W2": "1/0"}           # data cells holding an error (a formula in both workbooks)


@dataclass
class Case:
    """One sheet: 365 formulas at anchors, the plain-Excel expansion of every cell they fill."""

    name: str
    formulas: dict[str, Formula] = field(default_factory=dict)
    expand: dict[str, str | tuple[str, str]] = field(default_factory=dict)   # ("array", f): a CSE formula
    expected: dict[str, object] = field(default_factory=dict)                # Excel's documented value
    names: dict[str, str] = field(default_factory=dict)

    def spill(self, anchor: str, text: str, rows: list[list[object]], dynamic: bool = True) -> None:
        """`text` at `anchor`, spilling rows×columns, each cell's expansion given (a formula
        string, ("array", formula), or a value: Excel's, where LibreOffice is no judge)."""
        r0, c0 = _rc(anchor)
        h, w = len(rows), len(rows[0])
        ref = f"{anchor}:{_a1(r0 + h - 1, c0 + w - 1)}" if (h, w) != (1, 1) else None
        self.formulas[anchor] = Formula(text, spill=ref, dynamic=dynamic)
        for i, row in enumerate(rows):
            for j, x in enumerate(row):
                at = _a1(r0 + i, c0 + j)
                if isinstance(x, tuple) or (isinstance(x, str) and x.startswith("=")):
                    self.expand[at] = x
                else:
                    self.expected[at] = x


def _rc(ref: str) -> tuple[int, int]:
    from openpyxl.utils.cell import coordinate_from_string, column_index_from_string
    letters, row = coordinate_from_string(ref)
    return row, column_index_from_string(letters)


def _a1(r: int, c: int) -> str:
    from openpyxl.utils import get_column_letter
    return f"{get_column_letter(c)}{r}"


def _col(letter: str, n: int = 6) -> list[list[str]]:
    return [[f"={letter}{r}"] for r in range(1, n + 1)]


def _cases() -> list[Case]:
    out = []

    # Spill chains: F1 spills, G1 reads F1#, H1 reads G1# and F1#, I1 reads H1#, J1 sums I1#.
    c = Case("chain")
    c.spill("F1", "A1:A6*2", [[f"=A{r}*2"] for r in range(1, 7)])
    c.spill("G1", "_xlfn.ANCHORARRAY(F1)+B1:B6", [[f"=F{r}+B{r}"] for r in range(1, 7)])
    c.spill("H1", "_xlfn.ANCHORARRAY(G1)*_xlfn.ANCHORARRAY(F1)", [[f"=G{r}*F{r}"] for r in range(1, 7)])
    c.spill("I1", "_xlfn.ANCHORARRAY(H1)/10", [[f"=H{r}/10"] for r in range(1, 7)])
    c.spill("J1", "SUM(_xlfn.ANCHORARRAY(I1))", [["=SUM(I1:I6)"]])
    c.spill("K1", "_xlfn.ANCHORARRAY(I1)-_xlfn.ANCHORARRAY(F1)", [[f"=I{r}-F{r}"] for r in range(1, 7)])
    c.spill("L2", "_xlfn.SINGLE(B1:B6)*J1+SUM(_xlfn.ANCHORARRAY(K1)*A1:A6)", [["=B2*J1+SUMPRODUCT(K1:K6,A1:A6)"]])
    out.append(c)

    # The LSTM sheet's =ANCHORARRAY(U37)/U40 (a two-cell spill), beside copies of the same R1C1
    # shape whose targets are a constant (#REF!, parsed first) and a three-cell spill.
    c = Case("lstm")
    c.formulas["K37"] = Formula("_xlfn.ANCHORARRAY(J37)/J40", dynamic=True)     # J37: a constant
    c.expected["K37"] = REF
    c.spill("M37", "MMULT(A1:B2,{1;1})", [["=A1+B1"], ["=A2+B2"]])
    c.spill("N37", "_xlfn.ANCHORARRAY(M37)/M40", [["=M37/M40"], ["=M38/M40"]])
    c.spill("U37", "A1:A3+1", [["=A1+1"], ["=A2+1"], ["=A3+1"]])
    c.spill("V37", "_xlfn.ANCHORARRAY(U37)/U40", [["=U37/U40"], ["=U38/U40"], ["=U39/U40"]])
    out.append(c)

    c = Case("pe", names={
        "PE": "_xlfn.LAMBDA(_xlpm.pos,_xlpm.i,_xlpm.d,IF(ISEVEN(_xlpm.i),SIN(_xlpm.pos/_xlpm.d^(_xlpm.i/_xlpm.d)),"
              "COS(_xlpm.pos/_xlpm.d^((_xlpm.i-1)/_xlpm.d))))",
        "ANGLE": "_xlfn.LAMBDA(_xlpm.pos,_xlpm.i,_xlpm.d,_xlfn.LET(_xlpm.k,_xlpm.i-MOD(_xlpm.i,2),"
                 "_xlpm.pos/_xlpm.d^(_xlpm.k/_xlpm.d)))",
        "PE2": "_xlfn.LAMBDA(_xlpm.pos,_xlpm.i,_xlpm.d,IF(ISEVEN(_xlpm.i),SIN(ANGLE(_xlpm.pos,_xlpm.i,_xlpm.d)),"
               "COS(ANGLE(_xlpm.pos,_xlpm.i,_xlpm.d))))"})

    def pe(pos: object, i: object, d: object) -> str:
        return f"=IF(ISEVEN({i}),SIN(({pos})/{d}^(({i})/{d})),COS(({pos})/{d}^((({i})-1)/{d})))"
    c.spill("F1", "PE(5,6,100)", [[pe(5, 6, 100)]])
    c.spill("F2", "PE(5,7,100)", [[pe(5, 7, 100)]])
    c.spill("F3", "PE2(A1,D4,16)", [[pe("A1", "D4", 16)]])
    for r in range(1, 7):       # copied down, plain formulas (PE returns one value)
        c.formulas[f"G{r}"] = Formula(f"PE2(A{r},D{r},4)+PE(B{r},D{r}+1,4)")
        c.expand[f"G{r}"] = pe(f"A{r}", f"D{r}", 4) + "+" + pe(f"B{r}", f"D{r}+1", 4)[1:]
    c.spill("H1", "_xlfn.MAKEARRAY(5,6,_xlfn.LAMBDA(_xlpm.p,_xlpm.j,PE2(_xlpm.p-1,_xlpm.j-1,16)))",
            [[pe(p, j, 16) for j in range(6)] for p in range(5)])
    out.append(c)

    c = Case("stack")
    c.spill("E1", "_xlfn.HSTACK(A1:A3,B1:B2*10,C1:C3)",
            [["=A1", "=B1*10", "=C1"], ["=A2", "=B2*10", "=C2"], ["=A3", NA, "=C3"]])
    c.spill("E5", "_xlfn.VSTACK(A1:B2,C1,{7,8,9})",
            [["=A1", "=B1", NA], ["=A2", "=B2", NA], ["=C1", NA, NA], ["=7", "=8", "=9"]])
    c.spill("I1", "SUM(_xlfn.HSTACK(A1:A6,B1:B6)*_xlfn.VSTACK(B1:B3,A4:A6))", [["=SUMPRODUCT(A1:A3,B1:B3)"
                                                                                   "+SUMPRODUCT(B1:B3,B1:B3)"
                                                                                   "+SUMPRODUCT(A4:A6,A4:A6)"
                                                                                   "+SUMPRODUCT(B4:B6,A4:A6)"]])
    out.append(c)

    c = Case("slice")
    c.spill("E1", "_xlfn.TAKE(A1:C6,2)", [["=A1", "=B1", "=C1"], ["=A2", "=B2", "=C2"]])
    c.spill("E4", "_xlfn.TAKE(A1:C6,-2,-1)", [["=C5"], ["=C6"]])
    c.spill("H1", "_xlfn.TAKE(A1:C6,,2)", [[f"=A{r}", f"=B{r}"] for r in range(1, 7)])
    c.spill("K1", "_xlfn.TAKE(A1:B2,10)", [["=A1", "=B1"], ["=A2", "=B2"]])
    c.spill("K4", "_xlfn.TAKE(A1:B2,0)", [[CALC]])
    c.spill("M1", "_xlfn.DROP(A1:C6,4)", [["=A5", "=B5", "=C5"], ["=A6", "=B6", "=C6"]])
    c.spill("M4", "_xlfn.DROP(A1:C6,-4,2)", [["=C1"], ["=C2"]])
    c.spill("M7", "_xlfn.DROP(A1:B2,2)", [[CALC]])
    c.spill("Q1", "_xlfn.CHOOSECOLS(A1:C3,3,-3)", [["=C1", "=A1"], ["=C2", "=A2"], ["=C3", "=A3"]])
    c.spill("Q5", "_xlfn.CHOOSEROWS(A1:C6,{6,1},2)", [["=A6", "=B6", "=C6"], ["=A1", "=B1", "=C1"],
                                                        ["=A2", "=B2", "=C2"]])
    c.spill("Q9", "_xlfn.CHOOSECOLS(A1:C3,4)", [[VALUE]])
    c.spill("Q10", "_xlfn.CHOOSEROWS(A1:C3,0)", [[VALUE]])
    c.spill("U1", "_xlfn.TOCOL(A1:B3)", [["=A1"], ["=B1"], ["=A2"], ["=B2"], ["=A3"], ["=B3"]])
    c.spill("V1", "_xlfn.TOCOL(A1:B3,0,TRUE)", [["=A1"], ["=A2"], ["=A3"], ["=B1"], ["=B2"], ["=B3"]])
    c.spill("U8", "_xlfn.TOROW(Y1:Z2,1)", [["=Y1", "=Z2"]])
    c.spill("U9", "_xlfn.TOROW(Y1:Z2)", [["=Y1", "=Z1", "=Y2", "=Z2"]])
    c.spill("U10", "_xlfn.TOCOL(W1:W3,2)", [["=W1"], ["=W3"]])
    c.spill("U12", "SUM(_xlfn.TAKE(_xlfn.DROP(A1:B6,1,1),3))", [["=SUM(B2:B4)"]])
    out.append(c)

    c = Case("order")

    def by(key: str, col: str, k: int, desc: bool = False) -> str:
        pick = "LARGE" if desc else "SMALL"
        return f"=INDEX(${col}$1:${col}$6,MATCH({pick}(${key}$1:${key}$6,{k}),${key}$1:${key}$6,0))"
    c.spill("E1", "_xlfn._xlws.SORT(A1:C6)", [[by("A", x, k) for x in "ABC"] for k in range(1, 7)])
    c.spill("H1", "_xlfn._xlws.SORT(A1:B6,2,-1)", [[by("B", x, k, True) for x in "AB"] for k in range(1, 7)])
    c.spill("J1", "_xlfn._xlws.SORT(C1:C6)",
            [[("array", f'=INDEX($C$1:$C$6,MATCH({k},COUNTIF($C$1:$C$6,"<"&$C$1:$C$6),0))')] for k in range(6)])
    c.spill("AC1", "_xlfn._xlws.SORT(A1:B2,2,-1,TRUE)", [["=B1", "=A1"], ["=B2", "=A2"]])
    c.spill("AC4", '_xlfn._xlws.SORT({"b";1;TRUE;"a";-2})', [[-2.0], [1.0], ["a"], ["b"], [True]])
    c.spill("L1", "_xlfn.SORTBY(C1:C6,A1:A6,1)", [[by("A", "C", k)] for k in range(1, 7)])
    c.spill("M1", "_xlfn.SORTBY(A1:B6,B1:B6,-1)", [[by("B", x, k, True) for x in "AB"] for k in range(1, 7)])
    c.spill("O1", "_xlfn.SORTBY(A1:A6,A1:B1)", [[VALUE]])
    c.spill("O2", "SUMPRODUCT(_xlfn._xlws.SORT(A1:A6),B1:B6)",
            [["=" + "+".join(f"SMALL(A1:A6,{k})*B{k}" for k in range(1, 7))]])

    def kept(col: str, test: str, k: int) -> tuple[str, str]:
        return ("array", f"=INDEX({col}$1:{col}$6,SMALL(IF({test},ROW($A$1:$A$6)),{k}))")
    c.spill("Q1", "_xlfn._xlws.FILTER(A1:C6,A1:A6>0)", [[kept(x, "$A$1:$A$6>0", k) for x in "ABC"] for k in range(1, 5)])
    c.spill("Q6", "_xlfn._xlws.FILTER(A1:A6,A1:A6>100)", [[CALC]])
    c.spill("Q7", '_xlfn._xlws.FILTER(A1:A6,A1:A6>100,"none")', [['="none"']])
    c.spill("Q8", "_xlfn._xlws.FILTER(A1:C1,ISNUMBER(A1:C1))", [["=A1", "=B1"]])
    c.spill("Q9", "_xlfn._xlws.FILTER(A1:B6,(A1:A6>0)*(B1:B6>0))",
            [[kept(x, "($A$1:$A$6>0)*($B$1:$B$6>0)", k) for x in "AB"] for k in range(1, 4)])
    for r in range(1, 7):       # copies keep different numbers of rows: computed cell by cell
        c.spill(f"U{r}", f"ROWS(_xlfn._xlws.FILTER($A$1:$A$6,$A$1:$A$6>B{r}))",
                [[f'=COUNTIF($A$1:$A$6,">"&B{r})' if sum(a > B[r - 1] for a in A) else CALC]])

    def first(col: str, cond: str, k: int, n: int = 6) -> tuple[str, str]:
        rng = f"${col}$1:${col}${n}"
        return ("array", f"=INDEX({rng},SMALL(IF({cond.format(r=rng)},ROW({rng})),{k}))")
    c.spill("AA1", "_xlfn.UNIQUE(D1:D6)", [[first("D", "MATCH({r},{r},0)=ROW({r})", k)] for k in range(1, 4)])
    c.spill("AA5", "_xlfn.UNIQUE(D1:D6,FALSE,TRUE)", [[first("D", "COUNTIF({r},{r})=1", 1)]])
    c.spill("AA6", "_xlfn.UNIQUE(X1:X4)", [[first("X", "MATCH({r},{r},0)=ROW({r})", k, 4)] for k in range(1, 3)])
    c.spill("AA8", "_xlfn.UNIQUE({1,2,1,3},TRUE)", [["=1", "=2", "=3"]])
    c.spill("AA9", "_xlfn.UNIQUE(A1:A6,,TRUE)", [[f"=A{r}"] for r in range(1, 7)])
    out.append(c)

    c = Case("lambdas")
    c.spill("E1", "_xlfn.BYROW(A1:B6,_xlfn.LAMBDA(_xlpm.r,SUM(_xlpm.r)/COUNT(_xlpm.r)+MAX(_xlpm.r)))",
            [[f"=SUM(A{r}:B{r})/COUNT(A{r}:B{r})+MAX(A{r}:B{r})"] for r in range(1, 7)])
    c.spill("F1", "_xlfn.BYCOL(A1:B6,_xlfn.LAMBDA(_xlpm.c,SUMPRODUCT(_xlpm.c,$B$1:$B$6)))",
            [["=SUMPRODUCT(A1:A6,$B$1:$B$6)", "=SUMPRODUCT(B1:B6,$B$1:$B$6)"]])
    c.spill("H1", "_xlfn.BYROW(A1:B6,_xleta.MAX)", [[f"=MAX(A{r}:B{r})"] for r in range(1, 7)])
    c.spill("I1", "_xlfn.BYROW(A1:B2,_xlfn.LAMBDA(_xlpm.r,_xlpm.r*2))", [[CALC]])
    for r in range(1, 7):       # one-cell arrays copied down: the body reads the row's own B
        c.spill(f"J{r}", f"SUM(_xlfn.BYROW($A$1:$B$2,_xlfn.LAMBDA(_xlpm.r,MAX(_xlpm.r)*B{r})))",
                [[f"=(MAX($A$1:$B$1)+MAX($A$2:$B$2))*B{r}"]])
    c.spill("K1", "_xlfn.MAP(A1:A6,B1:B6,_xlfn.LAMBDA(_xlpm.a,_xlpm.b,MAX(_xlpm.a,_xlpm.b)-MIN(_xlpm.a,_xlpm.b)))",
            [[f"=MAX(A{r},B{r})-MIN(A{r},B{r})"] for r in range(1, 7)])
    c.spill("L1", "_xlfn.MAP(A1:A6,_xlfn.LAMBDA(_xlpm.v,SUM(_xlpm.v,$A$1:$A$6)))",
            [[f"=A{r}+SUM($A$1:$A$6)"] for r in range(1, 7)])
    c.spill("M1", "_xlfn.MAKEARRAY(3,4,_xlfn.LAMBDA(_xlpm.r,_xlpm.c,INDEX($A$1:$B$6,_xlpm.r,1+MOD(_xlpm.c,2))*_xlpm.c))",
            [[f"=INDEX($A$1:$B$6,{r},{1 + c % 2})*{c}" for c in range(1, 5)] for r in range(1, 4)])
    steps = "1"
    for x in ("A1", "B1", "A2", "B2", "A3", "B3"):
        steps = f"({steps})*0.5+{x}"
    c.spill("Q1", "_xlfn.REDUCE(1,A1:B3,_xlfn.LAMBDA(_xlpm.acc,_xlpm.x,_xlpm.acc*0.5+_xlpm.x))", [["=" + steps]])
    c.spill("Q2", "_xlfn.REDUCE(0,A1:A6,_xlfn.LAMBDA(_xlpm.a,_xlpm.x,IF(_xlpm.x>0,_xlpm.a+_xlpm.x,_xlpm.a)))",
            [['=SUMIF(A1:A6,">0")']])
    c.spill("Q3", "_xlfn.REDUCE(0,A1:A3,_xlfn.LAMBDA(_xlpm.a,_xlpm.x,_xlpm.a+_xlpm.x*{1,2}))",
            [["=SUM(A1:A3)", "=SUM(A1:A3)*2"]])
    cells = ["A1", "B1", "A2", "B2", "A3", "B3"]
    c.spill("S1", "_xlfn.SCAN(0,A1:B3,_xlfn.LAMBDA(_xlpm.a,_xlpm.x,_xlpm.a+_xlpm.x))",
            [["=" + "+".join(cells[:2 * i + j + 1]) for j in range(2)] for i in range(3)])
    c.spill("U1", "_xlfn.SCAN(1,A1:A6,_xlfn.LAMBDA(_xlpm.a,_xlpm.x,MAX(_xlpm.a,_xlpm.x)))",
            [[f"=MAX(1,$A$1:A{r})"] for r in range(1, 7)])
    c.spill("V1", "_xlfn.LET(_xlpm.f,_xlfn.LAMBDA(_xlpm.x,_xlpm.x^2+1),_xlpm.g,_xlfn.LAMBDA(_xlpm.y,"
                  "_xlpm.f(_xlpm.y)*2),_xlfn.MAP(A1:A6,_xlpm.g))", [[f"=(A{r}^2+1)*2"] for r in range(1, 7)])
    c.spill("AA1", "_xlfn.LET(_xlpm.sq,_xlfn.LAMBDA(_xlpm.r,SUMSQ(_xlpm.r)),_xlfn.BYROW(A1:B3,_xlpm.sq))",
            [[f"=SUMSQ(A{r}:B{r})"] for r in range(1, 4)])
    c.spill("AB1", "_xlfn.BYROW(_xlfn.HSTACK(A1:A6,B1:B6*2),_xlfn.LAMBDA(_xlpm.r,"
                  "_xlfn.REDUCE(0,_xlpm.r,_xlfn.LAMBDA(_xlpm.a,_xlpm.x,_xlpm.a*10+_xlpm.x))))",
            [[f"=A{r}*10+B{r}*2"] for r in range(1, 7)])
    # FILTER keeps a different number of entries in each row: the body runs row by row.
    c.spill("AC1", "_xlfn.BYROW(A1:B6,_xlfn.LAMBDA(_xlpm.r,SUM(_xlfn._xlws.FILTER(_xlpm.r,_xlpm.r>0,0))))",
            [[f'=SUMIF(A{r}:B{r},">0")'] for r in range(1, 7)])
    for r in range(1, 4):       # ROW() in the body of copies: each copy's own row
        c.spill(f"AD{r}", "SUM(_xlfn.BYROW($A$1:$B$2,_xlfn.LAMBDA(_xlpm.x,SUM(_xlpm.x)*ROW())))",
                [["=(SUM($A$1:$B$1)+SUM($A$2:$B$2))*ROW()"]])
    out.append(c)
    return out


CASES = _cases()


def _fixtures(d: Path) -> tuple[Path, Path]:
    """(LibreOffice's recalculation of the expansions, the Excel 365 file with those values cached)."""
    from openpyxl import Workbook
    from openpyxl.worksheet.formula import ArrayFormula
    wb = Workbook()
    wb.remove(wb.active)
    for case in CASES:
        ws = wb.create_sheet(case.name)
        for ref, v in DATA.items():
            ws[ref] = v
        for ref, f in ERRORS.items():
            ws[ref] = "=" + f
        for ref, f in case.expand.items():
            ws[ref] = ArrayFormula(ref, f[1]) if isinstance(f, tuple) else f
        if case.name == "lstm":
            ws["J37"], ws["J40"], ws["M40"], ws["U40"] = 1.0, 3.0, 2.0, 4.0
    plain = d / "expanded.xlsx"
    wb.save(plain)
    judged = d / "expanded.lo.xlsx"
    lo_recalculate(plain, judged)
    from xl2nn.reader import read_workbook
    lo = read_workbook(judged)
    sheets = {}
    for case in CASES:
        vals = lo.sheets[case.name].values
        cells: dict[str, object] = dict(DATA)
        for ref, f in ERRORS.items():
            cells[ref] = Formula(f, cached=CellError("#DIV/0!"))
        if case.name == "lstm":
            cells.update({"J37": 1.0, "J40": 3.0, "M40": 2.0, "U40": 4.0})
        for anchor, f in case.formulas.items():
            for r, c in spill_cells(f.spill or anchor):
                ref = _a1(r, c)
                want = case.expected[ref] if ref in case.expected else vals.get((r, c))
                if ref == anchor:
                    f.cached = want
                    cells[ref] = f
                else:
                    cells[ref] = want
        sheets[case.name] = cells
    names = {k: v for case in CASES for k, v in case.names.items()}
    return judged, write_excel365(d / "dynamic365.xlsx", sheets, names)


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory) -> tuple[Path, Path]:
    if find_soffice() is None:
        pytest.skip("LibreOffice (soffice) is not installed")
    return _fixtures(tmp_path_factory.mktemp("dyn365"))


def test_the_fixture_is_in_excel_365s_saved_form(fixtures):
    _, path = fixtures
    with zipfile.ZipFile(path) as zf:
        sheet = zf.read("xl/worksheets/sheet1.xml").decode()
        assert '<c r="G1" cm="1"><f t="array" ref="G1:G6">_xlfn.ANCHORARRAY(F1)+B1:B6</f>' in sheet
        assert "XLDAPR" in zf.read("xl/metadata.xml").decode()
        assert "sheetMetadata+xml" in zf.read("[Content_Types].xml").decode()
        assert "/sheetMetadata" in zf.read("xl/_rels/workbook.xml.rels").decode()
    wb, _ = load(path)
    assert {(1, 6), (1, 7), (1, 8), (1, 9)} <= wb.sheets["chain"].dynamic


@pytest.mark.parametrize("case", [c.name for c in CASES])
def test_365_formulas_equal_libreoffice_on_their_expansions(fixtures, case):
    judged, path = fixtures
    from xl2nn.reader import read_workbook
    lo = read_workbook(judged).sheets[case]
    wb, graph = load(path)
    assert not [p for p in graph.problems if p.sheet == case], graph.problems
    recalc = recalculate(wb, graph)
    assert not {f: why for f, why in recalc.skipped.items() if graph.families[f].sheet == case}
    spec = next(c for c in CASES if c.name == case)
    checked = 0
    for ref in list(spec.expand) + list(spec.expected):
        r, c = _rc(ref)
        want = spec.expected[ref] if ref in spec.expected else lo.values.get((r, c))
        got = recalc.grids.value(case, r, c)
        assert want is not None, (case, ref, "LibreOffice gave nothing")
        assert agrees(want, got, same_code=ref in spec.expected), (case, ref, spec.expand.get(ref), want, got)
        checked += 1
    assert checked >= len(spec.formulas)


def test_verify_passes_on_the_365_file(fixtures):
    """The file's cached values are Excel's (LibreOffice's values of the expansions, Excel's
    documented ones elsewhere): `verify` recomputes every cell and agrees."""
    from xl2nn.testing import assert_workbook
    _, path = fixtures
    assert_workbook(path, values_only=True)


def test_both_readers_see_the_dynamic_arrays(fixtures):
    import xl2nn.reader.xlsx as X
    from xl2nn.reader import read_workbook
    _, path = fixtures
    fast = read_workbook(path)
    saved = X._fast_read
    X._fast_read = lambda *a: False         # the XML parser's reading
    try:
        slow = read_workbook(path)
    finally:
        X._fast_read = saved
    assert fast.sheets["chain"].spans is not None
    for name in fast.sheets:
        assert fast.sheets[name].dynamic == slow.sheets[name].dynamic
    assert len(fast.sheets["order"].dynamic) > 10


# ---------------------------------------------------------------- spill ranges: never a silent #REF!

def _book(tmp_path: Path, cells: dict[str, object], names: dict[str, str] | None = None, sheet: str = "s"):
    path = write_excel365(tmp_path / "b.xlsx", {sheet: cells}, names)
    wb, graph = load(path)
    return wb, graph, recalculate(wb, graph)


def test_copies_of_one_shape_read_spills_of_their_own_sizes(tmp_path):
    """The LSTM bug: =ANCHORARRAY(U37)/U40 shares its R1C1 shape with copies whose targets
    spill other sizes or nothing; the shape is parsed once, so each copy took the first one's
    range (#REF! or a wrong size). The spill targets are now part of the shape's key."""
    cells: dict[str, object] = {"A1": 1.0, "A2": 2.0, "A3": 3.0, "J37": 7.0, "J40": 1.0, "M40": 2.0, "U40": 4.0}
    cells["K37"] = Formula("_xlfn.ANCHORARRAY(J37)/J40", dynamic=True)
    cells["M37"] = Formula("A1:A2*3", spill="M37:M38")
    cells["N37"] = Formula("_xlfn.ANCHORARRAY(M37)/M40", spill="N37:N38")
    cells["U37"] = Formula("A1:A3*3", spill="U37:U39")
    cells["V37"] = Formula("_xlfn.ANCHORARRAY(U37)/U40", spill="V37:V39")
    _, graph, recalc = _book(tmp_path, cells)
    v = recalc.grids.value
    assert v("s", 37, 11) == REF
    assert [v("s", r, 14) for r in (37, 38)] == [1.5, 3.0]
    assert [v("s", r, 22) for r in (37, 38, 39)] == [0.75, 1.5, 2.25]


def test_spill_reference_across_sheets_ignores_case(tmp_path):
    path = write_excel365(tmp_path / "x.xlsx", {
        "Gates": {"A1": 1.0, "A2": 2.0, "B1": Formula("A1:A2*2", spill="B1:B2", cached=2.0), "B2": 4.0},
        "out": {"A1": Formula("SUM(_xlfn.ANCHORARRAY(gates!B1))", cached=6.0)}})
    wb, graph = load(path)
    assert recalculate(wb, graph).grids.value("out", 1, 1) == 6.0


def test_spill_of_an_ordinary_formula_that_computes_an_array_is_named(tmp_path):
    """A1# where A1 holds an ordinary formula (a file Excel 365 did not write): its spill
    range is unknown; the cell says so instead of #REF!. One whose value is one number is
    #REF!, as in Excel."""
    cells = {"A1": 1.0, "A2": 2.0, "B1": Formula("A1:A2*2"), "C1": Formula("SUM(_xlfn.ANCHORARRAY(B1))"),
             "D1": Formula("SUM(A1:A2)"), "E1": Formula("SUM(_xlfn.ANCHORARRAY(D1))")}
    wb, graph, recalc = _book(tmp_path, cells)
    problem = next(p for p in graph.problems if (p.row, p.col) == (1, 3))
    assert "spill range is unknown" in problem.message and "s!B1" in problem.message
    missing, _, n, _ = recalc.not_recomputed(graph)      # what eval and verify list, with the reason
    assert n == 1 and any("spill range is unknown" in why and cells == ["s!C1"] for why, cells in missing.items())
    assert recalc.grids.value("s", 1, 5) == REF


def test_a_dynamic_array_that_changed_size_keeps_its_values_and_says_why(tmp_path):
    """The saved spill range is the file's; a recomputed result of another size is not forced
    into it (a legacy array pads with #N/A, a dynamic one re-spills)."""
    cells = {"A1": 1.0, "A2": 2.0, "A3": 3.0,
             "B1": Formula("_xlfn._xlws.FILTER(A1:A3,A1:A3>1)", spill="B1:B3", cached=9.0), "B2": 9.0, "B3": 9.0,
             "C1": Formula("_xlfn._xlws.FILTER(A1:A3,A1:A3>1)", spill="C1:C3", legacy=True, cached=9.0)}
    _, graph, recalc = _book(tmp_path, cells)
    fam = graph.family_at("s", 1, 2)
    assert "spills 2×1 now" in recalc.skipped[fam.id] and "s!B1:B3" in recalc.skipped[fam.id]
    assert recalc.grids.value("s", 3, 2) == 9.0                  # kept
    assert recalc.grids.value("s", 3, 3) == NA                    # legacy: #N/A padding


def test_a_one_cell_dynamic_array_whose_spill_is_blocked_is_spill_error(tmp_path):
    cells = {"A1": 1.0, "A2": 2.0, "B2": "in the way",
             "B1": Formula("A1:A2*2", dynamic=True, cached=CellError("#SPILL!")),
             "D1": Formula("A1:A2*2", dynamic=True, cached=2.0)}     # D2 is empty: Excel would spill
    _, graph, recalc = _book(tmp_path, cells)
    assert recalc.grids.value("s", 1, 2) == CellError("#SPILL!")
    assert "saved it as one cell" in recalc.skipped[graph.family_at("s", 1, 4).id]


def test_recursive_named_lambda_is_refused_per_cell(tmp_path):
    names = {"FACT": "_xlfn.LAMBDA(_xlpm.n,IF(_xlpm.n<=1,1,_xlpm.n*FACT(_xlpm.n-1)))"}
    _, graph, recalc = _book(tmp_path, {"A1": Formula("FACT(3)"), "A2": Formula("1+1")}, names)
    assert any("calls itself" in p.message for p in graph.problems)
    assert recalc.grids.value("s", 2, 1) == 2.0


def test_lambda_formula_reads_back_as_written(tmp_path):
    cells = {"A1": 1.0, "A2": 2.0, "B1": Formula("_xlfn.BYROW(A1:A2,_xlfn.LAMBDA(_xlpm.row,SUM(_xlpm.row)*2))",
                                                  spill="B1:B2")}
    _, graph, _ = _book(tmp_path, cells)
    assert graph.family_at("s", 1, 2).formula == "=BYROW(A1:A2,LAMBDA(row,SUM(row)*2))"


# ---------------------------------------------------------------- models

def _model_book(tmp_path: Path, formulas: dict[str, Formula], rows: int = 6) -> Path:
    rng = np.random.default_rng(0)
    cells: dict[str, object] = {}
    for r in range(1, rows + 1):
        cells[f"A{r}"], cells[f"B{r}"], cells[f"C{r}"] = (float(round(x, 3)) for x in rng.normal(size=3))
    cells.update({"D1": 0.5, "E1": -0.3, "F1": 0.2})
    cells.update(formulas)
    return write_excel365(tmp_path / "model.xlsx", {"m": cells})


def _finite_differences(model, name: str, h: float = 1e-6) -> np.ndarray:
    w = model.weights[name]
    out = np.zeros(w.numel())
    with torch.no_grad():
        flat = w.view(-1)
        for j in range(w.numel()):
            flat[j] += h
            up = float(model())
            flat[j] -= 2 * h
            down = float(model())
            flat[j] += h
            out[j] = (up - down) / (2 * h)
    return out


def test_model_through_hstack_take_byrow_trains_and_its_gradient_is_right(tmp_path):
    from xl2nn.compiler.program import Program
    from xl2nn.train import TrainOptions, train
    path = _model_book(tmp_path, {
        "G1": Formula("_xlfn.HSTACK(A1:A6*$D$1,B1:B6*$E$1+$F$1)", spill="G1:H6"),
        "J1": Formula("_xlfn.BYROW(_xlfn.TAKE(_xlfn.ANCHORARRAY(G1),4),_xlfn.LAMBDA(_xlpm.r,"
                      "SUM(_xlpm.r)+MAX(_xlpm.r)^2))", spill="J1:J4"),
        "L1": Formula("SUMXMY2(_xlfn.ANCHORARRAY(J1),C1:C4)")})
    c = compile_workbook(path, params="D1:F1", loss="L1")
    model = c.model
    name = next(iter(model.weights))
    # The interpreter equals the sheet recomputed with its rules.
    wb, graph = load(path)
    sheet = recalculate(wb, graph).grids.value("m", 1, 12)
    loss = model()
    assert math.isclose(float(loss.detach()), sheet, rel_tol=1e-12)
    loss.backward()
    grad = model.weights[name].grad.detach().numpy().reshape(-1).copy()
    fd = _finite_differences(model, name)
    assert np.allclose(grad, fd, rtol=1e-6, atol=1e-8), (grad, fd)
    program = Program(model)
    assert program.mode == "traced"
    assert math.isclose(float(program().detach()), float(loss.detach()), rel_tol=1e-12)
    result = train(model, TrainOptions(steps=60, lr=0.02))
    assert result.final_loss < 0.5 * float(loss.detach())


def test_sort_of_parameters_is_torch_sort_and_traced(tmp_path):
    """SORT of parameter-dependent numbers: torch.sort each step, the gradient to the values."""
    from xl2nn.compiler.program import Program
    path = _model_book(tmp_path, {
        "G1": Formula("_xlfn._xlws.SORT(A1:A6*$D$1+B1:B6*$E$1)", spill="G1:G6"),
        "L1": Formula("SUMPRODUCT(_xlfn.ANCHORARRAY(G1),C1:C6)+$F$1^2")})
    c = compile_workbook(path, params="D1:F1", loss="L1")
    model = c.model
    name = next(iter(model.weights))
    loss = model()
    loss.backward()
    grad = model.weights[name].grad.detach().numpy().reshape(-1).copy()
    assert np.allclose(grad, _finite_differences(model, name), rtol=1e-6, atol=1e-8)
    program = Program(model)
    assert program.mode == "traced"
    with torch.no_grad():                       # another order of the values: still right
        model.weights[name].copy_(torch.tensor([[-0.7, 0.9, 0.1]], dtype=torch.float64))
    assert math.isclose(float(program().detach()), float(model().detach()), rel_tol=1e-12)


def test_filter_of_parameters_runs_interpreted_and_a_moving_spill_is_refused(tmp_path):
    """FILTER's rows depend on the weights: never frozen into the trace. Inside one formula it
    runs interpreted, exactly; spilled, its size would change with the weights: refused."""
    from xl2nn.compiler.program import Program
    path = _model_book(tmp_path, {
        "G1": Formula("A1:A6*$D$1+B1:B6*$E$1", spill="G1:G6"),
        "L1": Formula("SUM(_xlfn._xlws.FILTER(_xlfn.ANCHORARRAY(G1),_xlfn.ANCHORARRAY(G1)>0)^2)+$F$1^2",
                      dynamic=True)})
    c = compile_workbook(path, params="D1:F1", loss="L1")
    program = Program(c.model)
    assert program.mode != "traced" and "FILTER" in program.fallback
    model = c.model
    name = next(iter(model.weights))
    for w in ([[0.5, -0.3, 0.2]], [[-1.0, 0.8, 0.3]]):
        with torch.no_grad():
            model.weights[name].copy_(torch.tensor(w, dtype=torch.float64))
        g = np.array([[w[0][0] * a + w[0][1] * b] for a, b in zip(*_ab(path))])
        assert math.isclose(float(program().detach()), float((g[g > 0] ** 2).sum() + w[0][2] ** 2), rel_tol=1e-12)

    a, b = _ab(path)
    n = sum(0.5 * x - 0.3 * y > 0 for x, y in zip(a, b))          # rows FILTER keeps at the file's weights
    moved = next(w for w in ([-1.0, 0.8, 0.3], [1.0, 0.0, 0.3], [0.0, 1.0, 0.3], [-1.0, 0.0, 0.3])
                 if sum(w[0] * x + w[1] * y > 0 for x, y in zip(a, b)) != n)
    spilled = _model_book(tmp_path, {
        "G1": Formula("A1:A6*$D$1+B1:B6*$E$1", spill="G1:G6"),
        "H1": Formula("_xlfn._xlws.FILTER(_xlfn.ANCHORARRAY(G1),_xlfn.ANCHORARRAY(G1)>0)", spill=f"H1:H{n}"),
        "L1": Formula("SUMSQ(_xlfn.ANCHORARRAY(H1))+$F$1^2")})
    c = compile_workbook(spilled, params="D1:F1", loss="L1")
    c.model()                                   # at the file's weights the spill fits
    with torch.no_grad():
        c.model.weights[next(iter(c.model.weights))].copy_(torch.tensor([moved], dtype=torch.float64))
    with pytest.raises(UnsupportedFormula, match=f"m!H1:H{n}.*spills"):
        c.model()


def _ab(path: Path) -> tuple[list[float], list[float]]:
    wb, _ = load(path)
    v = wb.sheets["m"].values
    return [v[(r, 1)] for r in range(1, 7)], [v[(r, 2)] for r in range(1, 7)]
