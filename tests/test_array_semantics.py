"""Array semantics against LibreOffice: implicit intersection, array formulas, formulas
filled over rectangles (one op, a convolution), per-cell MMULT grids, recurrences."""
from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
import torch

from xl2nn.api import compile_workbook, load
from xl2nn.cells import CellError
from xl2nn.compiler.grid import recalculate
from .libreoffice import find_soffice, recalculate_many
from xl2nn.reader import read_workbook

from .conftest import agrees, run_cli

pytestmark = pytest.mark.skipif(find_soffice() is None, reason="LibreOffice (soffice) is not installed")

COLS = "ABCDEFGH"


def _letters(i: int) -> str:
    from openpyxl.utils import get_column_letter
    return get_column_letter(i)


def _semantics(path: Path) -> Path:
    """Sheet 's': ranges read as single values in ordinary formulas, and the same in
    array formulas; a recurrence down rows (per-step SGD) and one across columns (an RNN)."""
    from openpyxl import Workbook
    from openpyxl.worksheet.formula import ArrayFormula
    rng = random.Random(1)
    wb = Workbook()
    ws = wb.active
    ws.title = "s"
    for r in range(1, 11):
        for c in range(1, 9):
            ws.cell(r, c, rng.choice([1, 2, -1, 0.5, 3, -2, 0.25]))
    f = {
        # implicit intersection: inside and outside the range, column, row and 2-D ranges
        "J1": "=A1:A5*2", "J3": "=A1:A5*2", "J7": "=A1:A5*2",
        "J2": "=SUM(A1:C1*A2:C2)", "J4": "=SUM(EXP(A1:A5))", "J5": "=MAX(A1:A10*2)",
        "J6": "=-A1:A10", "J8": "=A:A*2", "J9": "=SUM(A:A)", "J10": "=A1:H10+1",
        "B12": "=$A$1:$H$1*2", "K12": "=$A$1:$H$1*2",
        # reference-class and passed-through arguments
        "K1": "=IF(A1>0,A1:A5,B1:B5)", "K2": "=SUM(IF(A1>0,A1:A5,B1:B5))", "K3": "=IFERROR(A1:A5/B1:B5,7)",
        "K4": "=AND(A1:A5>0)", "K5": "=SUM(A1:C3)+COUNT(A1:A5)",
        # array-class arguments compute arrays in an ordinary formula
        "K6": "=SUMPRODUCT((A1:A5>0)*B1:B5)", "K7": "=SUMPRODUCT(MMULT(A1:B2,C1:D2))",
    }
    for r in range(1, 11):                     # copied down, past the range's end
        f[f"L{r}"] = "=$B$2:$B$6*10+$C$1:$C$8"
    for cell, text in f.items():
        ws[cell] = text
    # The same formulas as array formulas: no intersection.
    ws["M1"] = ArrayFormula("M1", "=SUM(A1:C1*A2:C2)")
    ws["M2"] = ArrayFormula("M2", "=SUM(EXP(A1:A3))")
    ws["M3"] = ArrayFormula("M3:M5", "=A1:A3*2")
    # Recurrence down rows: three weights updated per row from the row above.
    for c in "OPQ":
        ws[f"{c}1"] = "=1"
        for r in range(2, 9):
            ws[f"{c}{r}"] = f"={c}{r - 1}-0.1*({c}{r - 1}*$A{r}-$B{r})*$A{r}"
    # Recurrence across columns: a tanh RNN unrolled over S..W, three hidden units.
    for r in range(1, 4):
        ws[f"S{r}"] = f"=A{r}"
        for prev, c in zip("STUV", "TUVW"):
            ws[f"{c}{r}"] = f"=TANH(SUMPRODUCT($D$1:$F$1,{prev}$1:{prev}$3)*0.3+B{r})"
    wb.save(path)
    return path


def _conv(path: Path) -> Path:
    """A 3x3 convolution with ReLU as per-cell array formulas over a 6x6 rectangle, a
    per-cell MMULT grid, a squared error and its mean; the kernel is Solver's."""
    from openpyxl import Workbook
    from openpyxl.workbook.defined_name import DefinedName
    from openpyxl.worksheet.formula import ArrayFormula
    rng = random.Random(0)
    wb = Workbook()
    ws = wb.active
    ws.title = "conv"
    for r in range(1, 9):
        for c in range(1, 9):
            ws.cell(r, c, round(rng.uniform(-1, 1), 3))
    for r in range(1, 4):
        for c in "KLM":
            ws[f"{c}{r}"] = round(rng.uniform(-0.5, 1), 3)
    for r in range(1, 7):
        for i in range(6):
            src, out, err = COLS[i], _letters(16 + i), _letters(24 + i)
            ws[f"{out}{r}"] = ArrayFormula(f"{out}{r}", f"=MAX(0,SUM({src}{r}:{COLS[i + 2]}{r + 2}*$K$1:$M$3))")
            ws[f"{err}{r}"] = f"=({out}{r}-{src}{r})^2"
    ws["AE1"] = "=AVERAGE(X1:AC6)"
    # Per-cell MMULT: row r of A by column c of the kernel, copied over a 6x3 grid.
    for r in range(1, 7):
        for j, c in enumerate(["AG", "AH", "AI"]):
            k = "KLM"[j]
            ws[f"{c}{r}"] = f"=MMULT($A{r}:$C{r},{k}$1:{k}$3)"
    for name, text in (("solver_opt", "conv!$AE$1"), ("solver_adj", "conv!$K$1:$M$3"), ("solver_typ", "2")):
        ws.defined_names[name] = DefinedName(name, attr_text=text, hidden=True)
    wb.save(path)
    return path


@pytest.fixture(scope="module")
def judged(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("arrays")
    srcs = {"semantics": _semantics(d / "semantics.xlsx"), "conv": _conv(d / "conv.xlsx")}
    outs = {k: d / f"{k}.lo.xlsx" for k in srcs}
    recalculate_many([(srcs[k], outs[k]) for k in srcs])
    return outs


def _agree(path: Path) -> int:
    wb, graph = load(path)
    recalc = recalculate(wb, graph)
    assert not recalc.skipped
    n = 0
    for sheet in wb.sheets.values():
        for pos in sheet.formulas:
            want, got = sheet.values.get(pos), recalc.grids.value(sheet.name, *pos)
            assert agrees(want, got), (sheet.name, pos, want, got)
            n += 1
    return n


def test_every_cell_agrees_with_libreoffice(judged):
    assert _agree(judged["semantics"]) > 60
    assert _agree(judged["conv"]) > 80


def test_libreoffice_intersected(judged):
    """Guard: LibreOffice's own values show the intersection, so the check is not vacuous."""
    s = read_workbook(judged["semantics"]).sheets["s"]
    a = [s.values[(r, 1)] for r in range(1, 11)]
    assert s.values[(3, 10)] == a[2] * 2                    # J3 = A3*2
    assert isinstance(s.values[(7, 10)], CellError)         # J7: row 7 is outside A1:A5
    assert s.values[(4, 10)] == pytest.approx(math.exp(a[3]))   # J4 = SUM(EXP(A4)): one value
    assert s.values[(2, 13)] == pytest.approx(sum(math.exp(x) for x in a[:3]))   # M2 as an array formula
    assert isinstance(s.values[(12, 11)], CellError)        # K12: column K is outside A:H


def test_families_are_tensor_ops(judged):
    wb, graph = load(judged["conv"])
    by_area = {str(f.area): f for f in graph.families}
    assert by_area["conv!P1:U6"].size == 36            # the convolution: one family, not 36 cells
    assert by_area["conv!X1:AC6"].size == 36
    assert by_area["conv!AG1:AI6"].size == 18          # the MMULT grid
    wb, graph = load(judged["semantics"])
    areas = {str(f.area) for f in graph.families}
    # The SGD recurrence: one op per step (row), over the three weights.
    assert {f"s!O{r}:Q{r}" for r in range(2, 9)} <= areas
    # The RNN: one op per time step (column), over the three units.
    assert {f"s!{c}1:{c}3" for c in "TUVW"} <= areas


def test_shown_formula_is_the_written_one(judged):
    wb, graph = load(judged["semantics"])
    fam = graph.family_at("s", 7, 10)
    assert fam.formula_at(7, 10) == "=A1:A5*2"
    assert "#VALUE!" in repr(fam.ast)       # what is evaluated: row 7 lies outside A1:A5


def test_convolution_gradients_and_training(judged, tmp_path):
    c = compile_workbook(judged["conv"])
    wb = read_workbook(judged["conv"])
    loss = c.model()
    assert float(loss.detach()) == pytest.approx(wb.sheets["conv"].values[(1, 31)], rel=1e-12)
    loss.backward()
    w = c.model.weights["conv_K1_M3"]
    g = w.grad.clone()
    with torch.no_grad():
        for i in range(3):
            for j in range(3):
                h = 1e-6
                w[i, j] += h
                up = float(c.model())
                w[i, j] -= 2 * h
                down = float(c.model())
                w[i, j] += h
                assert (up - down) / (2 * h) == pytest.approx(float(g[i, j]), rel=1e-5, abs=1e-9)
    out = tmp_path / "conv.trained.xlsx"
    rc, text, _ = run_cli("train", str(judged["conv"]), "--steps", "100", "--lr", "0.5", "-o", str(out), "--json")
    assert rc == 0
    import json
    r = json.loads(text)
    assert r["final_loss"] < 0.6 * r["start_loss"]


def test_inspect_names_the_convolution(judged):
    import json
    rc, text, _ = run_cli("inspect", str(judged["conv"]), "--json")
    layers = {layer["cells"]: layer["layer"] for layer in json.loads(text)["layers"]}
    assert rc == 0 and layers["conv!P1:U6"] == "conv 3×3 + ReLU"
