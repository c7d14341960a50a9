"""The grid-of-MMULTs rewrite, judged on layouts other authors would build.

fast.ai's collaborative-filtering sheet predicts each rating with one copied formula,
`=IF(H2="",0,MMULT($B25:$F25,H$19:H$23))`: a user's embedding row times a movie's embedding
column. Traced cell by cell that is two gathers and a batch of one-by-one products; the rewrite
(xl2nn/compiler/gathers.py `grid_matmul`, `gather_as_view`, `gather_past_view`) turns it into ONE
`mm` of the two blocks, a bias row and column becoming broadcast adds. It must fire on the index
arithmetic, never on names or positions, so here the same math is laid out the ways a sheet can
hold it (openpyxl, cached values from LibreOffice's recalculation, a Solver model in the hidden
names solver_opt / solver_adj / solver_typ), rectangular (6 × 7, 3 factors) so a transpose shows:

  moved       the sample's layout, every block elsewhere on the sheet
  transposed  movies down the rows, users across: MMULT(movie row, user column)
  bias        plus a bias row (below the movie factors) and column (right of the user factors)
  reversed    prediction row i reads embedding row n-1-i (and its bias): exact, whatever form
  diagonal    only the diagonal cells compute an MMULT, the rest constants: no grid, exact
  holed       every cell but one computes an MMULT: no full grid, exact

For each: the traced program (one mm, no bmm, no gather where the grid is full; the form
found printed otherwise), its value against
LibreOffice's, its gradient against the interpreter's, and `xl2nn export` (with the sample's
dotprod and bias sheets): no torch.ops, no repeated right-hand side, every line under a comment
naming its cells and formula, and the module's value is the sheet's.
"""
from __future__ import annotations

import importlib.util
import math
import operator
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from openpyxl import Workbook
from openpyxl.utils import get_column_letter as col
from openpyxl.workbook.defined_name import DefinedName
from torch import fx

from xl2nn.api import compile_workbook
from xl2nn.cells import parse_a1
from xl2nn.compiler.program import Program
from xl2nn.reader import read_workbook

from .conftest import ROOT, run_cli
from .libreoffice import find_soffice, recalculate_many

SAMPLE = ROOT / "sample_workbooks" / "collab_filter.xlsx"
K = 3                                           # factors

aten = torch.ops.aten
MM = {torch.mm, aten.mm.default, aten.mm}
BMM = {torch.bmm, aten.bmm.default, aten.bmm}
MATMUL = {torch.matmul, operator.matmul, aten.matmul.default, aten.matmul}     # 2-D: mm, 3-D: bmm
GATHER = {aten.index.Tensor, aten.index, torch.index_select, aten.index_select.default, torch.gather,
          aten.gather.default, torch.take, aten.take.default}
GETITEM = {operator.getitem, torch.Tensor.__getitem__}


@dataclass(frozen=True)
class Layout:
    """A rows × cols ratings block and its predictions; an embedding row per ratings row (a
    rows × K block) and an embedding column per ratings column (K × cols). Positions are
    top-left cells; `adj` is the Solver's changing cells."""
    sheet: str
    rows: int
    cols: int
    ratings: str
    row_emb: str
    col_emb: str
    preds: str
    loss: str
    adj: str
    row_bias: str | None = None     # rows × 1, added as $X{r}
    col_bias: str | None = None     # 1 × cols, added as X${c}
    reverse: bool = False           # prediction row i reads embedding (and bias) row rows-1-i
    cells: str = "all"              # which predictions are MMULTs: all, diagonal, holed
    seed: int = 0

    @property
    def grid(self) -> bool:
        """Every prediction is one row-by-column product of a full grid: one mm, no bmm."""
        return self.cells == "all"


LAYOUTS = [
    Layout("moved", 6, 7, ratings="D5", col_emb="N20", row_emb="X30", preds="D40", loss="B2",
           adj="$X$30:$Z$35,$N$20:$T$22", seed=1),
    Layout("transposed", 7, 6, col_emb="E2", ratings="E8", preds="E20", row_emb="A20", loss="L2",
           adj="$A$20:$C$26,$E$2:$J$4", seed=2),
    Layout("bias", 6, 7, col_emb="H3", col_bias="H6", row_emb="B12", row_bias="E12", preds="H12",
           ratings="H20", loss="P2", adj="$B$12:$E$17,$H$3:$N$6", seed=3),
    Layout("reversed", 6, 7, col_bias="H2", col_emb="H3", row_bias="A12", row_emb="B12", preds="H12",
           ratings="H20", loss="P2", adj="$A$12:$D$17,$H$2:$N$5", reverse=True, seed=4),
    Layout("diagonal", 6, 7, ratings="H2", col_emb="H10", row_emb="B14", preds="H14", loss="P1",
           adj="$B$14:$D$19,$H$10:$N$12", cells="diagonal", seed=5),
    Layout("holed", 6, 7, ratings="H2", col_emb="H10", row_emb="B14", preds="H14", loss="P1",
           adj="$B$14:$D$19,$H$10:$N$12", cells="holed", seed=6),
]
BY_NAME = {x.sheet: x for x in LAYOUTS}


def _at(cell: str, dr: int = 0, dc: int = 0) -> tuple[int, int]:
    r, c = parse_a1(cell)
    return r + dr, c + dc


def _ref(r: int, c: int, abs_row: bool = False, abs_col: bool = False) -> str:
    return f"{'$' if abs_col else ''}{col(c)}{'$' if abs_row else ''}{r}"


def _block(ws, top_left: str, values: np.ndarray) -> None:
    r0, c0 = parse_a1(top_left)
    for i, row in enumerate(values):
        for j, v in enumerate(row):
            if not np.isnan(v):
                ws.cell(r0 + i, c0 + j, float(v))


def build(layout: Layout, path: Path) -> Path:
    """The layout's workbook, written with openpyxl (formulas, no cached values)."""
    x = layout
    rng = np.random.default_rng(x.seed)
    ratings = np.round(rng.uniform(0.5, 5.0, size=(x.rows, x.cols)) * 2) / 2
    ratings[rng.random(ratings.shape) < 0.25] = np.nan
    ratings[0, 0] = ratings[1, 1] = 4.0                # the diagonal control rates something
    wb = Workbook()
    ws = wb.active
    ws.title = x.sheet
    _block(ws, x.ratings, ratings)
    _block(ws, x.row_emb, np.round(rng.uniform(-1, 1, size=(x.rows, K)), 6))
    _block(ws, x.col_emb, np.round(rng.uniform(-1, 1, size=(K, x.cols)), 6))
    if x.row_bias:
        _block(ws, x.row_bias, np.round(rng.uniform(-0.5, 0.5, size=(x.rows, 1)), 6))
    if x.col_bias:
        _block(ws, x.col_bias, np.round(rng.uniform(-0.5, 0.5, size=(1, x.cols)), 6))
    for name, at in (("ratings", x.ratings), ("predictions", x.preds)):
        r, c = _at(at, -1)
        if r >= 1 and ws.cell(r, c).value is None:
            ws.cell(r, c, name)
    hole = (x.rows // 2, x.cols // 2)
    for i in range(x.rows):
        e = x.rows - 1 - i if x.reverse else i             # the embedding row this row reads
        for j in range(x.cols):
            pr, pc = _at(x.preds, i, j)
            if x.cells == "diagonal" and i != j or x.cells == "holed" and (i, j) == hole:
                ws.cell(pr, pc, 0)
                continue
            er, ec = _at(x.row_emb, e)
            cr, cc = _at(x.col_emb, 0, j)
            dot = (f"MMULT({_ref(er, ec, abs_col=True)}:{_ref(er, ec + K - 1, abs_col=True)},"
                   f"{_ref(cr, cc, abs_row=True)}:{_ref(cr + K - 1, cc, abs_row=True)})")
            if x.col_bias:
                dot += "+" + _ref(*_at(x.col_bias, 0, j), abs_row=True)
            if x.row_bias:
                dot += "+" + _ref(*_at(x.row_bias, e), abs_col=True)
            ws.cell(pr, pc, f'=IF({_ref(*_at(x.ratings, i, j))}="",0,{dot})')
    last = lambda at: _ref(*_at(at, x.rows - 1, x.cols - 1))   # noqa: E731
    ws[x.loss] = (f"=SQRT(SUMXMY2({x.ratings}:{last(x.ratings)},{x.preds}:{last(x.preds)})"
                  f"/COUNT({x.ratings}:{last(x.ratings)}))")
    lr, lc = parse_a1(x.loss)
    adj = ",".join(f"{x.sheet}!{part}" for part in x.adj.split(","))
    for name, text in (("solver_opt", f"{x.sheet}!{_ref(lr, lc, True, True)}"), ("solver_adj", adj),
                       ("solver_typ", "2")):
        ws.defined_names[name] = DefinedName(name, attr_text=text, hidden=True)
    wb.save(path)
    return path


def _take_values(path: Path, lo: Path) -> None:
    """LibreOffice's values as the cached values of path's formula cells, in place (its own
    saved copy drops the hidden Solver names, so only its values are taken)."""
    from xl2nn.writer import patch_workbook
    ours, theirs = read_workbook(path), read_workbook(lo)
    updates = {name: {pos: theirs.sheets[name].values.get(pos) for pos in sheet.formulas}
               for name, sheet in ours.sheets.items()}
    out = lo.with_name("patched-" + path.name)
    patch_workbook(path, out, updates)
    shutil.copyfile(out, path)


@pytest.fixture(scope="module")
def books(tmp_path_factory) -> dict[str, Path]:
    """Every layout's workbook with LibreOffice's values: one soffice run for all of them."""
    if find_soffice() is None:
        pytest.skip("LibreOffice (soffice) is not installed: no judge of the cached values")
    tmp = tmp_path_factory.mktemp("rewrites")
    paths = {x.sheet: build(x, tmp / f"{x.sheet}.xlsx") for x in LAYOUTS}
    los = recalculate_many([(p, tmp / "lo" / p.name) for p in paths.values()])
    for p, lo in zip(paths.values(), los):
        _take_values(p, lo)
    return paths


@pytest.fixture(scope="module")
def compiled(books) -> dict[str, tuple[object, Program]]:
    """(compile_workbook's result, its Program) per layout, made once per module."""
    out = {}
    for name, path in books.items():
        c = compile_workbook(path, sheet=name)
        out[name] = (c, Program(c.model))
    return out


def _cached(path: Path, sheet: str, cell: str) -> float:
    value = read_workbook(path).sheets[sheet].values.get(parse_a1(cell))
    assert isinstance(value, float), (path.name, sheet, cell, value)
    return value


def _ops(p: Program) -> list[fx.Node]:
    return [n for n in p.full.graph.nodes if n.op in ("call_function", "call_method")]


def _kind(node: fx.Node) -> str:
    """'mm' (a 2-D matrix product), 'bmm' (a batched one), 'gather' (entries copied by a
    tensor of indices: aten.index, or x[i] with a tensor i once the rewrites print it as
    getitem), else ''. Slices x[:, a:b] are views, not gathers."""
    t = node.target
    val = node.meta.get("val")
    if t in MM or t in MATMUL and getattr(val, "ndim", 2) == 2:
        return "mm"
    if t in BMM or t in MATMUL:
        return "bmm"
    if t in GATHER:
        return "gather"
    if t in GETITEM or t == "__getitem__":
        key = node.args[1] if isinstance(node.args[1], tuple) else (node.args[1],)
        if any(isinstance(k, fx.Node) for k in key):
            return "gather"
    return ""


def _form(p: Program) -> dict[str, int]:
    ops = [_kind(n) for n in _ops(p)]
    return {k: ops.count(k) for k in ("mm", "bmm", "gather")}


def _names(p: Program) -> str:
    return ", ".join(getattr(n.target, "__name__", str(n.target)) for n in _ops(p))


# --------------------------------------------------------------------------- the workbooks

def test_libreoffice_computed_the_predictions(books):
    """The judge really ran: each objective is a number, each MMULT cell its product."""
    for x in LAYOUTS:
        sheet = read_workbook(books[x.sheet]).sheets[x.sheet]
        assert isinstance(sheet.values.get(parse_a1(x.loss)), float), x.sheet
        assert len(sheet.formulas) == 1 + {"all": x.rows * x.cols, "diagonal": min(x.rows, x.cols),
                                           "holed": x.rows * x.cols - 1}[x.cells]
        i, j = 1, 1                         # rated in every layout, an MMULT in every layout
        e = x.rows - 1 - i if x.reverse else i
        want = sum(sheet.values[_at(x.row_emb, e, f)] * sheet.values[_at(x.col_emb, f, j)] for f in range(K))
        want += sheet.values[_at(x.row_bias, e)] if x.row_bias else 0.0
        want += sheet.values[_at(x.col_bias, 0, j)] if x.col_bias else 0.0
        assert math.isclose(sheet.values[_at(x.preds, i, j)], want, rel_tol=1e-12), x.sheet


# --------------------------------------------------------------------------- the traced program

@pytest.mark.parametrize("name", [x.sheet for x in LAYOUTS if x.grid and not x.reverse])
def test_a_full_grid_is_one_matrix_product(compiled, name):
    c, p = compiled[name]
    assert p.mode == "traced", p.fallback
    assert _form(p) == {"mm": 1, "bmm": 0, "gather": 0}, _names(p)


def test_reversed_rows_are_traced_in_whatever_form(compiled):
    """Prediction row i reads embedding row n-1-i (and its bias). The form is free: one product
    of the blocks and a gather putting the entries in the sheet's order, or a batch of products
    per row (each row of predictions is its own copied formula there); only the mode is
    asserted here, exactness below. The form found is printed (pytest -s)."""
    c, p = compiled["reversed"]
    assert p.mode == "traced", p.fallback
    print(f"\nreversed: {_form(p)}: {_names(p)}")


@pytest.mark.parametrize("name", [x.sheet for x in LAYOUTS if not x.grid])
def test_no_full_grid_is_traced_in_whatever_form(compiled, name):
    """Pairs that do not cover a grid: no product of the blocks is required (one computing
    entries the sheet discards would still be exact); only the mode is asserted here,
    exactness below. The form found is printed (pytest -s)."""
    c, p = compiled[name]
    assert p.mode == "traced", p.fallback
    print(f"\n{name}: {_form(p)}: {_names(p)}")


@pytest.mark.parametrize("sheet", ["dotprod", "bias"])
def test_the_samples_grid_is_one_matrix_product(sheet):
    """The sample itself (15 × 15, 5 factors; bias: a bias row above the movie factors, a bias
    column left of the user factors) as the layouts above: one mm, no bmm, no gather."""
    c = compile_workbook(SAMPLE, sheet=sheet)
    p = Program(c.model)
    assert p.mode == "traced", p.fallback
    assert _form(p) == {"mm": 1, "bmm": 0, "gather": 0}, _names(p)
    assert math.isclose(float(p().detach()), _cached(SAMPLE, sheet, "Y2"), rel_tol=1e-12)
    assert p.check() <= 1e-12


@pytest.mark.parametrize("name", [x.sheet for x in LAYOUTS])
def test_the_program_equals_libreoffice(books, compiled, name):
    c, p = compiled[name]
    want = _cached(books[name], name, BY_NAME[name].loss)
    assert math.isclose(float(p().detach()), want, rel_tol=1e-12), (float(p().detach()), want)
    assert math.isclose(float(c.model().detach()), want, rel_tol=1e-12)
    assert p.check() <= 1e-12


@pytest.mark.parametrize("name", [x.sheet for x in LAYOUTS])
def test_the_gradient_equals_the_interpreters(compiled, name):
    c, p = compiled[name]
    weights = list(c.model.weights.values())
    got = torch.autograd.grad(p(), weights)
    want = torch.autograd.grad(c.model(), weights)
    for w, g, h in zip(c.model.weights, got, want):
        assert g.shape == h.shape, w
        assert torch.count_nonzero(h) > 0, w          # every block reaches the loss
        assert torch.allclose(g, h, rtol=1e-10, atol=1e-10 * float(h.abs().max())), (w, (g - h).abs().max())


# --------------------------------------------------------------------------- export

def _forward(source: str) -> list[str]:
    """The stripped lines of forward's body."""
    lines = source.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("def forward("))
    body = []
    for line in lines[start + 1:]:
        if line.strip() and not line.startswith(" " * 8):
            break
        body.append(line.strip())
    return body


_ASSIGN = re.compile(r"^([A-Za-z_]\w*)\s*=\s*(?!=)(.+)$")
_CELLS = re.compile(r"^# \S+!\$?[A-Z]+\$?\d+(:\$?[A-Z]+\$?\d+)?\s.*=")


def _check_source(source: str) -> list[str]:
    """What is wrong with an exported module's source (empty: nothing)."""
    problems = []
    if "torch.ops" in source:
        problems += [f"torch.ops: {line.strip()}" for line in source.splitlines() if "torch.ops" in line]
    seen: dict[str, str] = {}
    commented = False
    for line in _forward(source):
        if _CELLS.match(line):
            commented = True
        m = _ASSIGN.match(line)
        if m is None:
            continue
        name, expr = m.groups()
        if expr in seen:
            problems.append(f"{name} = {seen[expr]} = {expr}")
        seen.setdefault(expr, name)
        if not commented:
            problems.append(f"no comment naming cells and a formula above {line}")
    if not seen:
        problems.append("no assignment in forward")
    return problems


def _import(path: Path) -> torch.nn.Module:
    name = f"_test_rewrites_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
        return module.Model()
    finally:
        sys.modules.pop(name, None)


def _export(src: Path, sheet: str, out: Path) -> str:
    rc, stdout, err = run_cli("export", str(src), "--sheet", sheet, "-o", str(out))
    assert rc == 0, stdout + err
    return out.read_text()


def test_the_checks_of_exported_source_catch_what_they_check():
    """_check_source on a hand-written forward: a bad one is caught three ways, a good one not."""
    bad = ("class Model:\n    def forward(self):\n        a1 = torch.mm(x, y)\n"
           "        # s!B2 =SUM(A1:A3)\n        a2 = torch.ops.aten.slice.Tensor(x, 0, 0, 1)\n"
           "        a3 = torch.ops.aten.slice.Tensor(x, 0, 0, 1)\n        return a3\n")
    problems = _check_source(bad)
    assert any(p.startswith("torch.ops") for p in problems)
    assert any(p.startswith("a3 = a2 = ") for p in problems)
    assert any(p.startswith("no comment") and "a1 =" in p for p in problems)
    good = "    def forward(self):\n        # s!B2:C3 =A1*2\n        mul1 = torch.mul(x, 2)\n        return mul1\n"
    assert _check_source(good) == []


# Every Solver model of the samples: (workbook, sheet, objective)
SAMPLE_MODELS = [("collab_filter", "dotprod", "Y2"), ("collab_filter", "bias", "Y2"), ("titanic", "nnet", "AH1"),
                 ("titanic", "linear", "AA7"), ("titanic", "mmult", "AA1"), ("linear_regression", "regression", "H6"),
                 ("softmax_regression", "softmax", "W8"), ("sgd_by_hand", "sgd", "T6"), ("convolution", "conv", "P9")]


@pytest.mark.parametrize("book, sheet, loss", SAMPLE_MODELS, ids=[f"{b}-{s}" for b, s, _ in SAMPLE_MODELS])
def test_sample_exports_clean_source_that_computes_the_sheet(tmp_path, book, sheet, loss):
    src = ROOT / "sample_workbooks" / f"{book}.xlsx"
    source = _export(src, sheet, tmp_path / f"{sheet}.py")
    assert _check_source(source) == []
    want = _cached(src, sheet, loss)
    assert math.isclose(float(_import(tmp_path / f"{sheet}.py")().detach()), want, rel_tol=1e-12)


@pytest.mark.parametrize("name", [x.sheet for x in LAYOUTS])
def test_layout_exports_clean_source_that_computes_the_sheet(books, tmp_path, name):
    source = _export(books[name], name, tmp_path / f"{name}.py")
    assert _check_source(source) == []
    want = _cached(books[name], name, BY_NAME[name].loss)
    assert math.isclose(float(_import(tmp_path / f"{name}.py")().detach()), want, rel_tol=1e-12)
