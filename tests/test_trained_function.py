"""The function trained is the sheet's function: training-level differential tests.

Hypothesis draws seeds; each seed builds a Solver workbook whose per-row formula puts random
compositions of the library's functions (every one of them, see TEMPLATES) and operators on
the parameter path. For each workbook, at several weight points:
- the traced program (what `train` runs and `export` writes) equals the interpreter, values and
  gradients (rel 1e-12); a model that cannot be traced says which cells and function;
- both equal the sheet recomputed cell by cell with Excel's semantics at those weights (the
  checked grid engine, which the differential suite holds to LibreOffice), or, where the sheet
  gives an error, neither is a valid number;
- autograd agrees with central differences wherever the objective is smooth there.
Then `train` for some steps equals plain SGD driven by the interpreter, and (with LibreOffice)
every logged row of `sgd_steps` is the objective's value at that row's weights.
"""
from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from xl2nn.api import compile_workbook, load
from xl2nn.cells import CellError
from xl2nn.compiler.grid import recalculate
from xl2nn.compiler.program import Program
from xl2nn.errors import BadInput, UnsupportedFormula
from xl2nn.functions import FUNCTIONS
from xl2nn.writeback import parameter_cells

from .conftest import solver_workbook

ROWS = 6
RTOL = 1e-12

# ------------------------------------------------------------------ the grammar
# p(): an expression that depends on the parameters C1:C3; k(): one that does not.
# R: a range of six parameter-dependent cells (E1:E6 = A*C1+C2), K: a constant column.
R, K = "$E$1:$E$6", "$A$1:$A$6"
Sub = Callable[[], str]
Template = Callable[[random.Random, Sub, Sub], str]


def _text(p: Sub) -> str:
    return f'TEXT({p()},"0.00")'


TEMPLATES: dict[str, Template] = {
    "ABS": lambda r, p, k: f"ABS({p()})",
    "ACOS": lambda r, p, k: f"ACOS({p()}/(1+ABS({p()})))",
    "AND": lambda r, p, k: f"AND({p()}>0,{k()}<2)*1",
    "ASIN": lambda r, p, k: f"ASIN({p()}/(1+ABS({p()})))",
    "ATAN": lambda r, p, k: f"ATAN({p()})",
    "ATAN2": lambda r, p, k: f"ATAN2({p()},{k()})",
    "AVERAGE": lambda r, p, k: f"AVERAGE({R})",
    "AVERAGEIF": lambda r, p, k: r.choice([f'AVERAGEIF({R},">0")', f'AVERAGEIF({K},">2",{R})']),
    "AVERAGEIFS": lambda r, p, k: f'AVERAGEIFS({R},{K},">1",{R},"<3")',
    "CEILING": lambda r, p, k: f"CEILING({p()},{r.choice(['0.5', '1', '0.25'])})",
    "CEILING.MATH": lambda r, p, k: f"_xlfn.CEILING.MATH({p()})",
    "CHOOSE": lambda r, p, k: f"CHOOSE({r.randint(1, 3)},{p()},{k()},{p()})",
    "COLUMNS": lambda r, p, k: f"COLUMNS({R})*{p()}",
    "CONCAT": lambda r, p, k: f'LEN(_xlfn.CONCAT({_text(p)},"x"))',
    "CONCATENATE": lambda r, p, k: f'VALUE(CONCATENATE("1",{_text(p)}))',
    "COS": lambda r, p, k: f"COS({p()})",
    "COSH": lambda r, p, k: f"COSH({p()}/4)",
    "COUNT": lambda r, p, k: f"COUNT({R})*{p()}",
    "COUNTA": lambda r, p, k: f"COUNTA({R})+{p()}",
    "COUNTBLANK": lambda r, p, k: f"COUNTBLANK({R})+{p()}",
    "COUNTIF": lambda r, p, k: f'COUNTIF({R},"{r.choice([">", "<", ">=", "<="])}{r.choice(["0", "1", "-0.5"])}")',
    "COUNTIFS": lambda r, p, k: f'COUNTIFS({R},">0",{K},"<4")',
    "DEGREES": lambda r, p, k: f"DEGREES({p()})",
    # Excel 365's array functions (functions/arrays.py), inside one formula: a LAMBDA's body
    # reads the cell's own row (p()), so the batched evaluation repeats it per item.
    "BYCOL": lambda r, p, k: f"SUM(_xlfn.BYCOL(_xlfn.HSTACK({R},{K}),_xlfn.LAMBDA(_xlpm.c,SUMSQ(_xlpm.c))))*{p()}",
    "BYROW": lambda r, p, k: f"SUM(_xlfn.BYROW(_xlfn.HSTACK({R},{K}),_xlfn.LAMBDA(_xlpm.r,MAX(_xlpm.r)*{p()})))",
    "CHOOSECOLS": lambda r, p, k: f"SUM(_xlfn.CHOOSECOLS(_xlfn.HSTACK({R},{K}),{r.choice(['1', '2', '-1'])}))",
    "CHOOSEROWS": lambda r, p, k: f"SUM(_xlfn.CHOOSEROWS({R},{r.randint(1, ROWS)},-1))*{p()}",
    "DROP": lambda r, p, k: f"SUM(_xlfn.DROP({R},{r.choice(['1', '-2', '4'])}))",
    "FILTER": lambda r, p, k: f"SUM(_xlfn._xlws.FILTER({R},{R}>{r.choice(['0', '1', p()])},0))",
    "HSTACK": lambda r, p, k: f"SUM(_xlfn.HSTACK({R},{K})*{p()})",
    "LAMBDA": lambda r, p, k: f"_xlfn.LAMBDA(_xlpm.x,_xlpm.x*2+1)({p()})",
    "MAKEARRAY": lambda r, p, k: (f"SUM(_xlfn.MAKEARRAY(2,3,_xlfn.LAMBDA(_xlpm.i,_xlpm.j,"
                                  f"INDEX({R},_xlpm.i+_xlpm.j)*_xlpm.j)))"),
    "REDUCE": lambda r, p, k: f"_xlfn.REDUCE({p()},{R},_xlfn.LAMBDA(_xlpm.a,_xlpm.x,_xlpm.a*0.5+_xlpm.x))",
    "SCAN": lambda r, p, k: f"SUM(_xlfn.SCAN({k()},{R},_xlfn.LAMBDA(_xlpm.a,_xlpm.x,MAX(_xlpm.a,_xlpm.x))))",
    "SORT": lambda r, p, k: f"SUMPRODUCT(_xlfn._xlws.SORT({R},1,{r.choice(['1', '-1'])}),{K})",
    "SORTBY": lambda r, p, k: f"SUMPRODUCT(_xlfn.SORTBY({K},{R}),{R})",
    "TAKE": lambda r, p, k: f"SUM(_xlfn.TAKE({R},{r.choice(['2', '-3'])}))*{p()}",
    "TOCOL": lambda r, p, k: f"SUMPRODUCT(_xlfn.TOCOL(_xlfn.HSTACK({R},{K})),_xlfn.TOCOL(_xlfn.HSTACK({K},{R}),0,TRUE))",
    "TOROW": lambda r, p, k: f"SUM(_xlfn.TOROW({R})*{p()})",
    "UNIQUE": lambda r, p, k: f"SUM(_xlfn.UNIQUE(ROUND({R},0)))",
    "VSTACK": lambda r, p, k: f"SUMPRODUCT(_xlfn.VSTACK({R},{K}),_xlfn.VSTACK({K},{R}))",
    "_XLPM": None,    # a run-time LAMBDA's parameter (internal): covered by BYROW and the others
    "EXACT": lambda r, p, k: f'EXACT({_text(p)},"1.00")*1',
    "EXP": lambda r, p, k: f"EXP(MIN({p()},20))",
    "FALSE": lambda r, p, k: f"(FALSE()+{p()})",
    "FIND": lambda r, p, k: f'IFERROR(FIND("5",{_text(p)}),0)',
    "FLOOR": lambda r, p, k: f"FLOOR({p()},{r.choice(['0.5', '1', '0.25'])})",
    "FLOOR.MATH": lambda r, p, k: f"_xlfn.FLOOR.MATH({p()})",
    "HLOOKUP": lambda r, p, k: f"HLOOKUP({p()},$G$8:$K$9,2,{r.choice(['TRUE', 'FALSE'])})",
    "IF": lambda r, p, k: f"IF({p()}{r.choice(['<', '>', '<=', '>='])}0,{r.choice([p(), k(), '0'])},{p()})",
    "IFERROR": lambda r, p, k: f"IFERROR({r.choice(['LN', 'SQRT', '1/'])}({p()}),{k()})",
    "INDEX": lambda r, p, k: r.choice([f"INDEX($H$1:$H$5,1+MOD(INT(ABS({p()})*3),5))",
                                       f"INDEX({R},{r.randint(1, ROWS)})", f"INDEX($C$1:$C$3,{r.randint(1, 3)})"]),
    "INT": lambda r, p, k: f"INT({p()})",
    "ISBLANK": lambda r, p, k: f"ISBLANK({p()})*1",
    "ISERR": lambda r, p, k: f"ISERR(LN({p()}))*1",
    "ISERROR": lambda r, p, k: f"ISERROR(SQRT({p()}))*1",
    "ISEVEN": lambda r, p, k: f"ISEVEN({p()}*3)*1",
    "ISLOGICAL": lambda r, p, k: f"ISLOGICAL({p()}>0)*1",
    "ISNA": lambda r, p, k: f"ISNA(MATCH({p()},$G$1:$G$5,0))*1",
    "ISNONTEXT": lambda r, p, k: f"ISNONTEXT({p()})*1",
    "ISNUMBER": lambda r, p, k: f"ISNUMBER({p()})*1",
    "ISODD": lambda r, p, k: f"ISODD({p()}*3)*1",
    "ISTEXT": lambda r, p, k: f"ISTEXT({_text(p)})*1",
    "LEFT": lambda r, p, k: f"VALUE(LEFT({_text(p)},3))",
    "LEN": lambda r, p, k: f"LEN({_text(p)})",
    "LN": lambda r, p, k: f"LN({p()})",
    "LOG": lambda r, p, k: f"LOG(ABS({p()})+1{r.choice(['', ',2'])})",
    "LOG10": lambda r, p, k: f"LOG10(ABS({p()})+1)",
    "LOOKUP": lambda r, p, k: r.choice([f"LOOKUP({p()},$G$1:$G$5,$H$1:$H$5)", f"LOOKUP({p()},$G$1:$H$5)"]),
    "LOWER": lambda r, p, k: f'LEN(LOWER({_text(p)}))',
    "MAP": None,      # needs a LAMBDA in an array formula: covered by test_dynamic_formulas
    "MATCH": lambda r, p, k: f"MATCH({p()},$G$1:$G$5,{r.choice(['1', '0', '-1'])})",
    "MAX": lambda r, p, k: r.choice([f"MAX({R})", f"MAX({p()},{k()})"]),
    "MAXIFS": lambda r, p, k: f'_xlfn.MAXIFS({R},{K},">2")',
    "MEDIAN": lambda r, p, k: f"MEDIAN({R})",
    "MID": lambda r, p, k: f"VALUE(MID({_text(p)},1,3))",
    "MIN": lambda r, p, k: r.choice([f"MIN({R})", f"MIN({p()},{k()})"]),
    "MINIFS": lambda r, p, k: f'_xlfn.MINIFS({R},{R},"<1")',
    "MMULT": lambda r, p, k: f"SUM(MMULT(TRANSPOSE({R}),{K}))",
    "MOD": lambda r, p, k: f"MOD({p()},{r.choice(['0.7', '2', '-1.5'])})",
    "N": lambda r, p, k: f"N({p()})",
    "NORM.DIST": lambda r, p, k: f"_xlfn.NORM.DIST({p()},{k()},1.5,{r.choice(['TRUE', 'FALSE'])})",
    "NORM.INV": lambda r, p, k: f"_xlfn.NORM.INV(1/(1+EXP(-{p()})),{k()},2)",
    "NORM.S.DIST": lambda r, p, k: f"_xlfn.NORM.S.DIST({p()},{r.choice(['TRUE', 'FALSE'])})",
    "NORM.S.INV": lambda r, p, k: f"_xlfn.NORM.S.INV({r.choice([f'1/(1+EXP(-{p()}))', p()])})",
    "NORMDIST": lambda r, p, k: f"NORMDIST({p()},{k()},0.5,{r.choice(['TRUE', 'FALSE'])})",
    "NORMINV": lambda r, p, k: f"NORMINV(1/(1+EXP(-{p()})),0,{r.choice(['1', '-1'])})",
    "NORMSDIST": lambda r, p, k: f"NORMSDIST({p()})",
    "NORMSINV": lambda r, p, k: f"NORMSINV(1/(1+EXP(-{p()})))",
    "NA": lambda r, p, k: f"IFERROR(NA(),{p()})",
    "NOT": lambda r, p, k: f"NOT({p()}>0)*1",
    "OR": lambda r, p, k: f"OR({p()}>0,{k()}>3)*1",
    "PI": lambda r, p, k: f"PI()*{p()}",
    "POWER": lambda r, p, k: f"POWER({p()},{r.choice(['2', '3', '0.5'])})",
    "PRODUCT": lambda r, p, k: f"PRODUCT({R})",
    "PROPER": lambda r, p, k: f"LEN(PROPER({_text(p)}))",
    "QUOTIENT": lambda r, p, k: f"QUOTIENT({p()}*5,{r.choice(['2', '-3'])})",
    "RADIANS": lambda r, p, k: f"RADIANS({p()})",
    "REPLACE": lambda r, p, k: f'VALUE(REPLACE({_text(p)},1,0,"1"))',
    "REPT": lambda r, p, k: f'LEN(REPT("a",MIN(ABS(INT({p()}*3)),9)))',
    "RIGHT": lambda r, p, k: f"VALUE(RIGHT({_text(p)},2))",
    "ROUND": lambda r, p, k: f"ROUND({p()},{r.choice(['0', '1', '2', '-1'])})",
    "ROUNDDOWN": lambda r, p, k: f"ROUNDDOWN({p()},{r.choice(['0', '1', '2'])})",
    "ROUNDUP": lambda r, p, k: f"ROUNDUP({p()},{r.choice(['0', '1', '2'])})",
    "ROWS": lambda r, p, k: f"ROWS({R})*{p()}",
    # Reference functions (functions/reference.py): positions from constants (a gather into the
    # parameters or E), and from the parameters (OFFSET into the table H1:H5: interpreted).
    "ADDRESS": lambda r, p, k: r.choice([f"INDIRECT(ADDRESS({r.randint(1, 3)},3))*{p()}",
                                         f"LEN(ADDRESS(ROW(),{r.randint(1, 30)},{r.randint(1, 4)}))*{p()}"]),
    "COLUMN": lambda r, p, k: r.choice([f"COLUMN()*{p()}", f"COLUMN($H$1)*{p()}"]),
    "INDIRECT": lambda r, p, k: r.choice([f'INDIRECT("C"&{r.randint(1, 3)})*{p()}',
                                          f'SUM(INDIRECT("$E$1:$E$"&{r.randint(1, ROWS)}))']),
    "OFFSET": lambda r, p, k: r.choice([f"OFFSET($H$1,MOD(INT(ABS({p()})*3),5),0)",
                                        f"SUM(OFFSET({R},{r.randint(0, 2)},0,{r.randint(1, 4)},1))",
                                        f"OFFSET($C$1,{r.randint(0, 2)},0)*{p()}"]),
    "RANGE": lambda r, p, k: r.choice([f"SUM($E$1:INDEX({R},{r.randint(1, ROWS)}))",
                                       f"SUM(OFFSET($E$1,{r.randint(0, 2)},0):$E$6)*{p()}"]),
    "ROW": lambda r, p, k: r.choice([f"ROW()*{p()}", f"INDEX({R},ROW())", f"(ROW($C$2)+{p()})"]),
    "SEARCH": lambda r, p, k: f'IFERROR(SEARCH("5",{_text(p)}),0)',
    "SEQUENCE": lambda r, p, k: f"SUM(_xlfn.SEQUENCE(3,1,{p()},{k()}))",
    "SIGN": lambda r, p, k: f"SIGN({p()})",
    "SIN": lambda r, p, k: f"SIN({p()})",
    "SINGLE": lambda r, p, k: f"_xlfn.SINGLE({R})*{p()}",
    "SINH": lambda r, p, k: f"SINH({p()}/4)",
    "SQRT": lambda r, p, k: f"SQRT({p()})",
    "STDEV": lambda r, p, k: f"STDEV({R})",
    "STDEV.P": lambda r, p, k: f"_xlfn.STDEV.P({R})",
    "STDEV.S": lambda r, p, k: f"_xlfn.STDEV.S({R})",
    "STDEVP": lambda r, p, k: f"STDEVP({R})",
    "SUBSTITUTE": lambda r, p, k: f'VALUE(SUBSTITUTE({_text(p)},"0","1"))',
    "SUM": lambda r, p, k: r.choice([f"SUM({R})", f"SUM({p()},{k()})"]),
    "SUMIF": lambda r, p, k: r.choice([f'SUMIF({R},">0")', f'SUMIF({K},">2",{R})', f'SUMIF({R},"<0",{K})']),
    "SUMIFS": lambda r, p, k: f'SUMIFS({R},{K},">1",{R},">-1")',
    "SUMPRODUCT": lambda r, p, k: f"SUMPRODUCT({R},{K})",
    "SUMSQ": lambda r, p, k: f"SUMSQ({R})",
    "SUMX2MY2": lambda r, p, k: f"SUMX2MY2({R},{K})",
    "SUMX2PY2": lambda r, p, k: f"SUMX2PY2({R},{K})",
    "SUMXMY2": lambda r, p, k: f"SUMXMY2({R},{K})",
    "T": lambda r, p, k: f"LEN(T({_text(p)}))",
    "TAN": lambda r, p, k: f"TAN({p()}/3)",
    "TANH": lambda r, p, k: f"TANH({p()})",
    "TEXT": lambda r, p, k: f'VALUE({_text(p)})',
    "TEXTJOIN": lambda r, p, k: f'LEN(_xlfn.TEXTJOIN(",",TRUE,{R}))',
    "TRANSPOSE": lambda r, p, k: f"SUMPRODUCT(TRANSPOSE({R}),TRANSPOSE({K}))",
    "TRIM": lambda r, p, k: f'VALUE(TRIM(" "&{_text(p)}))',
    "TRUE": lambda r, p, k: f"(TRUE()*{p()})",
    "TRUNC": lambda r, p, k: f"TRUNC({p()},{r.choice(['0', '1'])})",
    "TYPE": lambda r, p, k: f"TYPE({p()})",
    "UPPER": lambda r, p, k: f"LEN(UPPER({_text(p)}))",
    "VALUE": lambda r, p, k: f"VALUE({p()}&\"\")",
    "VAR": lambda r, p, k: f"VAR({R})",
    "VAR.P": lambda r, p, k: f"_xlfn.VAR.P({R})",
    "VAR.S": lambda r, p, k: f"_xlfn.VAR.S({R})",
    "VARP": lambda r, p, k: f"VARP({R})",
    "VLOOKUP": lambda r, p, k: f"VLOOKUP({p()},$G$1:$H$5,2,{r.choice(['TRUE', 'FALSE'])})",
    "XLOOKUP": lambda r, p, k: (f"_xlfn.XLOOKUP({p()},$G$1:$G$5,$H$1:$H$5,{k()},{r.choice(['0', '-1', '1'])},"
                                f"{r.choice(['1', '-1', '2', '-2'])})"),
    "XMATCH": lambda r, p, k: f"_xlfn.XMATCH({p()},$G$1:$G$5,{r.choice(['0', '-1', '1'])},{r.choice(['1', '-2', '2'])})",
}
OPERATORS = ["+", "-", "*", "/", "^", "&", "<", ">", "=", "<>", "<=", ">=", "neg", "%"]


def test_every_function_has_a_template():
    """A function added to the library must join the grammar (or say why it cannot)."""
    assert set(TEMPLATES) == set(FUNCTIONS)


def leaf_p(rng: random.Random) -> str:
    return rng.choice(["$C$1", "$C$2*A1", "E1", "(A1*$C$3)", "($C$1+$C$3)", "B1*$C$2"])


def leaf_k(rng: random.Random) -> str:
    return rng.choice(["A1", "B1", "2", "0.5", "-1", "3"])


def expr(rng: random.Random, depth: int, names: list[str]) -> str:
    """A parameter-dependent expression."""
    if depth <= 0 or rng.random() < 0.2:
        return leaf_p(rng)
    p = lambda: expr(rng, depth - 1, names)  # noqa: E731
    k = lambda: leaf_k(rng)  # noqa: E731
    if rng.random() < 0.3:
        op = rng.choice(OPERATORS)
        if op == "neg":
            return f"(-{p()})"
        if op == "%":
            return f"({p()}%)"
        if op == "^":
            return f"(({p()})^{rng.choice(['2', '3'])})"
        if op in ("<", ">", "=", "<>", "<=", ">="):
            return f"(({p()}{op}{k()})*{p()})"
        return f"({p()}{op}{rng.choice([p(), k()])})"
    name = rng.choice(names)
    return TEMPLATES[name](rng, p, k)


def build(path: Path, seed: int, names: list[str] | None = None) -> tuple[Path, str]:
    rng = random.Random(seed)
    names = names or sorted(n for n, t in TEMPLATES.items() if t is not None)
    body = expr(rng, 2, names)
    xs = [round(rng.uniform(-2, 3), 2) for _ in range(ROWS)]
    rows: list[list[object]] = [[x, round(2 * x + 1 + rng.uniform(-0.3, 0.3), 2)] for x in xs]
    for r, row in enumerate(rows):
        row += [[0.3, 0.7, -0.4][r] if r < 3 else None, None, None, None]
    table = [(-1.0, 5.0), (0.0, 2.0), (0.5, -1.0), (1.5, 3.0), (3.0, 0.5)]
    for i, (g, h) in enumerate(table):
        rows[i] += [g, h]
    while len(rows) < 9:
        rows.append([])
    formulas = {}
    for r in range(1, ROWS + 1):
        formulas[f"E{r}"] = f"=A{r}*$C$1+$C$2"
        formulas[f"D{r}"] = "=(" + body.replace("A1", f"A{r}").replace("B1", f"B{r}").replace(
            "E1", f"E{r}") + f"-B{r})^2"
    formulas["F1"] = "=AVERAGE(D1:D6)"
    for j, (g, h) in enumerate(table):
        col = "GHIJK"[j]
        formulas[f"{col}8"], formulas[f"{col}9"] = str(g), str(h)
    solver_workbook(path, rows, formulas, "$C$1:$C$3", "$F$1")
    _numbers_in_row_8_9(path)
    return path, formulas["D1"]


def _numbers_in_row_8_9(path: Path) -> None:
    """The horizontal table G8:K9 as numbers (solver_workbook writes formulas as text)."""
    from openpyxl import load_workbook
    wb = load_workbook(path)
    ws = wb.active
    for col in "GHIJK":
        for row in (8, 9):
            ws[f"{col}{row}"] = float(ws[f"{col}{row}"].value)
    wb.save(path)


# ------------------------------------------------------------------ the checks

def _sheet_value(c, weights: dict[str, np.ndarray]) -> object:
    model = c.model
    grids = recalculate(c.workbook, c.graph, only=model.needed,
                        overrides=parameter_cells(model.param_areas, weights)).grids
    return grids.value(*c.spec.objective)


def _set(model, weights: dict[str, np.ndarray]) -> None:
    with torch.no_grad():
        for n, p in model.weights.items():
            p.copy_(torch.as_tensor(weights[n]))


def _value_grad(run: Callable[[], torch.Tensor], model) -> tuple[float, np.ndarray | None]:
    """The objective and its gradient (None when nothing reaches the parameters there)."""
    y = run()
    if not y.requires_grad:
        return float(y.detach()), None
    params = list(model.weights.values())
    grads = torch.autograd.grad(y, params, allow_unused=True)
    return float(y.detach()), torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1)
                                         for p, g in zip(params, grads)]).numpy()


def close(a: float, b: float, rtol: float = RTOL) -> bool:
    return a == b or abs(a - b) <= rtol * max(abs(a), abs(b)) + 1e-300


def _points(rng: np.random.Generator, model, n: int) -> list[dict[str, np.ndarray]]:
    base = {k: p.detach().numpy().copy() for k, p in model.weights.items()}
    pts = [base]
    for _ in range(n - 1):
        pts.append({k: rng.uniform(-1.5, 1.5, size=v.shape) for k, v in base.items()})
    return pts


def check_workbook(path: Path, formula: str, points: int = 6) -> str:
    """All the per-weight-point checks; returns 'traced' or why interpreted."""
    try:
        c = compile_workbook(path)
    except BadInput as exc:
        # Refused only for an objective that is an error at the workbook's weights.
        wb, graph = load(path)
        assert isinstance(recalculate(wb, graph).grids.value("model", 1, 6), CellError), exc
        return f"refused: {exc}"
    model = c.model
    program = Program(model)
    rng = np.random.default_rng(0)
    for k, w in enumerate(_points(rng, model, points)):
        _set(model, w)
        want = _sheet_value(c, w)
        try:
            got_i, grad_i = _value_grad(model.forward, model)
        except UnsupportedFormula as exc:
            # Refused, naming the cells, where the sheet needs an error's code (ISNA of a
            # computed error): never a number.
            assert "keeps no error code" in str(exc) and "model!D1:D6" in str(exc), exc
            return f"refused at point {k}: {exc}"
        where = f"{formula} at point {k} {w}"
        if isinstance(want, CellError):
            # The sheet gives an error: ours must not be a valid number either.
            assert not math.isfinite(got_i), f"interpreter {got_i} where the sheet is {want}: {where}"
            if program.mode != "interpreted":
                got_t = float(program.forward().detach())
                assert not math.isfinite(got_t), f"traced {got_t} where the sheet is {want}: {where}"
            continue
        assert isinstance(want, float), f"the sheet's objective is {want!r}: {where}"
        assert close(got_i, want, 1e-11), f"interpreter {got_i} vs sheet {want}: {where}"
        if program.mode != "interpreted":
            got_t, grad_t = _value_grad(program.forward, model)
            assert close(got_t, want, 1e-11), f"traced {got_t} vs sheet {want}: {where}"
            assert close(got_t, got_i, RTOL), f"traced {got_t} vs interpreter {got_i}: {where}"
            if grad_i is not None and grad_t is not None:
                # Relative to the gradient's size: a component that is 0 in exact arithmetic
                # (VARP's slope along a shift of every entry) is a rounding error either way, and
                # rewritten sums (an mm for weights times columns) round in another order.
                finite = np.isfinite(grad_i) & np.isfinite(grad_t)
                scale = float(np.abs(np.concatenate([grad_i[finite], grad_t[finite], [0.0]])).max())
                bad = [(a, b) for a, b in zip(grad_t, grad_i) if not close(float(a), float(b), RTOL)
                       and not abs(float(a) - float(b)) <= RTOL * scale
                       and not (math.isnan(a) and math.isnan(b))]
                assert not bad, f"traced gradient {grad_t} vs interpreter {grad_i}: {where}"
        if grad_i is not None and np.all(np.isfinite(grad_i)):
            _check_finite_differences(model, w, grad_i, where)
    return program.mode if program.mode == "traced" else program.fallback


def _check_finite_differences(model, w: dict[str, np.ndarray], grad: np.ndarray, where: str) -> None:
    """Autograd against central differences where the objective is smooth around w: two step
    sizes that agree with each other (a jump or kink nearby makes them disagree: skipped)."""
    flat = np.concatenate([v.reshape(-1) for v in w.values()])
    names = list(w)
    sizes = [w[n].size for n in names]

    def f(x: np.ndarray) -> float:
        parts = np.split(x, np.cumsum(sizes)[:-1])
        _set(model, {n: p.reshape(w[n].shape) for n, p in zip(names, parts)})
        with torch.no_grad():
            return float(model())

    for i in range(len(flat)):
        est = []
        for h in (1e-5, 1e-6):
            hi = h * max(1.0, abs(flat[i]))
            up, down = flat.copy(), flat.copy()
            up[i] += hi
            down[i] -= hi
            est.append((f(up) - f(down)) / (2 * hi))
        if not all(math.isfinite(e) for e in est) or abs(est[0] - est[1]) > 1e-5 * max(1.0, abs(est[0])):
            continue                  # not smooth here
        assert abs(grad[i] - est[1]) <= 1e-5 * max(1.0, abs(est[1])), \
            f"autograd {grad[i]} vs finite difference {est[1]} for parameter {i}: {where}"
    _set(model, w)


@settings(max_examples=60, deadline=None, derandomize=True, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**31 - 1))
def test_traced_equals_interpreter_equals_sheet(tmp_path: Path, seed: int) -> None:
    path, formula = build(tmp_path / f"w{seed}.xlsx", seed)
    check_workbook(path, formula)


@pytest.mark.parametrize("name", sorted(n for n, t in TEMPLATES.items() if t is not None))
def test_each_function_on_the_parameter_path(tmp_path: Path, name: str) -> None:
    """Every function at least once, on its own over a parameter-dependent argument."""
    for seed in range(3):
        path, formula = build(tmp_path / f"{name}{seed}.xlsx", seed, [name])
        check_workbook(path, formula, points=4)


# ------------------------------------------------------------------ training and export
# Functions LibreOffice computes as Excel does on these sheets (the differential suite's
# findings): the sgd_steps rows are recomputed by it.
LIBREOFFICE_SAFE = ["ABS", "EXP", "LN", "SQRT", "TANH", "ROUND", "INT", "MOD", "IF", "MAX", "MIN", "SUM",
                    "AVERAGE", "SUMPRODUCT", "SUMSQ", "VLOOKUP", "MATCH", "INDEX", "COUNTIF", "SUMIF",
                    "IFERROR", "POWER", "SIGN", "TRUNC", "FLOOR", "CEILING", "SUMXMY2", "MEDIAN"]


def _weights(model) -> np.ndarray:
    return np.concatenate([p.detach().numpy().reshape(-1) for p in model.weights.values()])


def _plain_sgd(path: Path, steps: int, lr: float) -> tuple[list[float], np.ndarray] | None:
    """SGD driven by the interpreter alone: None where the objective has no gradient or is
    not finite along the way (train must refuse there too)."""
    model = compile_workbook(path).model
    losses = []
    for _ in range(steps + 1):
        model.zero_grad()
        y = model()
        if not y.requires_grad or not math.isfinite(float(y.detach())):
            return None
        losses.append(float(y.detach()))
        if len(losses) == steps + 1:
            break
        y.backward()
        with torch.no_grad():
            for p in model.weights.values():
                p -= lr * p.grad
    return losses, _weights(model)


@settings(max_examples=25, deadline=None, derandomize=True, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**31 - 1))
def test_train_is_plain_sgd_on_the_sheet(tmp_path: Path, seed: int) -> None:
    from xl2nn.train import TrainOptions, train
    path, formula = build(tmp_path / f"t{seed}.xlsx", seed)
    try:
        model = compile_workbook(path).model
    except BadInput:
        return                       # an error at the workbook's weights (test above)
    want = _plain_sgd(path, 5, 1e-3)
    try:
        result = train(model, TrainOptions(steps=5, lr=1e-3, log_every=1))
    except BadInput as exc:
        assert want is None, f"train refused ({exc}) where plain SGD runs: {formula}"
        return
    assert want is not None, f"train ran where plain SGD meets an error: {formula}"
    losses, weights = want
    np.testing.assert_allclose(result.trace.loss, losses, rtol=1e-12, err_msg=formula)
    np.testing.assert_allclose(_weights(model), weights, rtol=1e-12, atol=1e-300, err_msg=formula)


def test_sgd_steps_rows_are_the_sheet_at_their_weights(tmp_path: Path) -> None:
    """Every logged row's loss is the objective at that row's weights, as LibreOffice
    recalculates a copy of the workbook holding them."""
    from openpyxl import load_workbook

    from .libreoffice import find_soffice, recalculate_many

    from .conftest import run_cli
    if find_soffice() is None:
        pytest.skip("LibreOffice (soffice) is not installed")
    rows, pairs = [], []
    for seed in range(40):
        if len(rows) >= 24:
            break
        path, formula = build(tmp_path / f"s{seed}.xlsx", seed, LIBREOFFICE_SAFE)
        out = tmp_path / f"s{seed}.trained.xlsx"
        rc, _, _ = run_cli("train", str(path), "--steps", "20", "--lr", "0.002", "--log-every", "10",
                           "-o", str(out))
        if rc != 0:
            continue                  # refused in one line (an error value met): nothing to check
        trace = load_workbook(out, read_only=True)["sgd_steps"]
        table = [r for r in trace.iter_rows(min_row=2, values_only=True)]
        for k, row in enumerate(table):
            copy = tmp_path / f"s{seed}_{k}.xlsx"
            wb = load_workbook(path)
            for i, cell in enumerate(("C1", "C2", "C3")):
                wb["model"][cell] = row[2 + 3 * i]
            wb.save(copy)
            pairs.append((copy, tmp_path / "lo" / copy.name))
            rows.append((row[1], formula, row[0]))
    assert len(rows) >= 24
    (tmp_path / "lo").mkdir()
    recalculate_many(pairs)
    for (loss, formula, step), (_, lo) in zip(rows, pairs):
        got = load_workbook(lo, data_only=True)["model"]["F1"].value
        assert isinstance(got, float) and math.isclose(got, loss, rel_tol=1e-9), \
            f"step {step}: logged {loss}, LibreOffice {got}: {formula}"


def test_export_agrees_with_the_interpreter(tmp_path: Path) -> None:
    """The exported .py (and .onnx) compute the interpreter's objective at many weights."""
    import importlib.util

    from xl2nn.export import export
    from .test_export import load_python
    exported = onnx_checked = 0
    for seed in range(30):
        if exported >= 8:
            break
        path, formula = build(tmp_path / f"e{seed}.xlsx", seed)
        try:
            c = compile_workbook(path)
        except BadInput:
            continue
        if Program(c.model).full is None:
            continue                  # interpreted: export refuses in one line (test_export)
        onnx = onnx_checked < 2 and importlib.util.find_spec("onnxruntime") is not None
        files = export(c.model, tmp_path / f"e{seed}.py", str(path))
        module = load_python(files[0])
        session = None
        if onnx:
            import onnxruntime
            export(c.model, tmp_path / f"e{seed}.onnx", str(path))
            try:
                session = onnxruntime.InferenceSession(str(tmp_path / f"e{seed}.onnx"))
                onnx_checked += 1
            except Exception as exc:    # onnxruntime has no float64 kernel for some ops (Sinh): the next one
                if "NOT_IMPLEMENTED" not in str(exc):
                    raise
        exported += 1
        for w in _points(np.random.default_rng(seed), c.model, 6):
            _set(c.model, w)
            with torch.no_grad():
                want = float(c.model())
                for n, p in module.named_parameters():
                    p.copy_(torch.as_tensor(w[n]))
                got = float(module())
            assert close(got, want, 1e-12) or not (math.isfinite(got) or math.isfinite(want)), \
                f".py {got} vs interpreter {want}: {formula}"
            if session is not None:
                (o,) = session.run(None, {n: w[n] for n in w})
                assert close(float(o), want, 1e-12) or not (math.isfinite(float(o)) or math.isfinite(want)), \
                    f".onnx {float(o)} vs interpreter {want}: {formula}"
    assert exported >= 8 and (onnx_checked or importlib.util.find_spec("onnxruntime") is None)
