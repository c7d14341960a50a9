"""Reference functions computed, judged by LibreOffice: OFFSET, INDIRECT, ADDRESS, ROW, COLUMN,
ROWS/COLUMNS of computed references and the ':' operator between reference-returning calls;
their dependencies in the graph; and models that look up weights through them (fast.ai's
collaborative-filtering sheet: embeddings chosen by OFFSET, trained end to end).

Workbooks are written the way authors write them (openpyxl), recalculated by LibreOffice
(one soffice run for the base and a perturbed copy, whose inputs move the positions), and
every formula cell is compared with xl2nn's recalculation: numbers to rel 1e-9, errors as
errors. Where Excel documents another error code than LibreOffice gives (OFFSET off the
sheet: #REF!, LibreOffice #VALUE!), a unit test holds Excel's.
"""
from __future__ import annotations

import json
import math
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from openpyxl import Workbook
from openpyxl.workbook.defined_name import DefinedName
from openpyxl.worksheet.formula import ArrayFormula

from xl2nn.api import compile_workbook, load
from xl2nn.cells import CellError, a1, parse_a1
from xl2nn.compiler.grid import recalculate
from xl2nn.reader import read_workbook

from .conftest import agrees, run_cli
from .libreoffice import find_soffice, recalculate_many, with_libreoffice_values

needs_lo = pytest.mark.skipif(find_soffice() is None, reason="LibreOffice (soffice) is not installed: no judge")

# Position cells (column H of sheet s): the base values, and the perturbed ones that move them.
POSITIONS = [2, 1, 3, 2, 2, 1, 0, 4, 5, 3, 1, 2]
MOVED = [0, 3, 1, 4, 1, 2, 3, 1, 1, 0, 5, 6]

OFFSETS = {
    "E1": "=OFFSET(A1,2,1)",
    "E2": "=OFFSET(A1,H1,1)",
    "E3": "=OFFSET(A1:A12,0,1)",                 # a block where one value belongs: intersected
    "E4": "=SUM(OFFSET(A1,1,0,3,2))",
    "E5": "=SUM(OFFSET(A1,H2,0,H3,2))",
    "E6": "=OFFSET(A1,1.7,0)",
    "E7": "=OFFSET(A1,-0.5,0)",
    "E8": "=SUM(OFFSET(A1:B2,1,0))",
    "E9": "=SUM(OFFSET(A1:B2,1,0,,1))",
    "E10": '=OFFSET(A1,"2",0)',
    "E11": '=OFFSET(A1,"x",0)',
    "E12": "=OFFSET(A1,1/0,0)",
    "E13": "=OFFSET(A1,-1,0)",                   # off the sheet: #REF! (LibreOffice #VALUE!)
    "E14": "=SUM(OFFSET(A1,1,0,0,1))",           # height 0: #REF! (LibreOffice #VALUE!)
    "E15": "=ROWS(OFFSET(A1,0,0,4,2))",
    "E16": "=COLUMNS(OFFSET(A1,0,0,H4,H5))",
    "E17": "=OFFSET(C1,H6,0)",
    "E18": "=OFFSET(A1,0,0,1,1)+OFFSET(B1,H7,0)",
    "E19": "=AVERAGE(OFFSET($A$1,H8,0,3,1))",
    "E20": "=OFFSET(A1,TRUE,0)",
    "E21": "=OFFSET(D1,0,0)",
    "E22": "=OFFSET(A1,1048575,0)",
    "E23": "=SUM(OFFSET(A1,H9,0,2,1)*2)",
    "E24": "=OFFSET(A1:A12,0,1)*2",                # in row 24: outside the block, #VALUE!
}
INDIRECTS = {
    "J1": '=INDIRECT("B3")',
    "J2": '=INDIRECT("b"&H1+1)',
    "J3": "=INDIRECT(\"'Sheet 2'!B3\")",
    "J4": '=INDIRECT("R3C2",FALSE)',
    "J5": '=INDIRECT("R[1]C[-8]",FALSE)',
    "J6": '=INDIRECT("nope")',
    "J7": '=SUM(INDIRECT("A1:A3"))',
    "J8": '=INDIRECT("Sheet9!A1")',
    "J9": '=INDIRECT("")',
    "J10": '=SUM(INDIRECT("A:A"))',
    "J11": '=INDIRECT("$B$4")',
    "J12": '=INDIRECT("R3C2")',
    "J13": '=INDIRECT("B3",FALSE)',
    "J14": '=SUM(INDIRECT("tbl"))',
    "J15": '=INDIRECT("s!R1C1",FALSE)',
    "J16": '=SUM(INDIRECT("R1C1:R3C1",FALSE))',
    "J17": '=INDIRECT("A1:A3")',
    "J18": '=INDIRECT("A1","x")',
    "J19": "=INDIRECT(1/0)",
    "J20": '=INDIRECT("r2c1",false)',
    "J21": "=SUM(INDIRECT(\"'Sheet 2'!A1:B3\"))",
    "J22": "=INDIRECT(\"'Sheet 2'!C6\")*2",
    "J23": '=INDIRECT("A"&H10+1)+INDIRECT("R"&H11+1&"C2",FALSE)',
}
ADDRESSES = {
    "L1": "=ADDRESS(3,2)", "L2": "=ADDRESS(3,2,2)", "L3": "=ADDRESS(3,2,3)", "L4": "=ADDRESS(3,2,4)",
    "L5": "=ADDRESS(3,2,1,FALSE)", "L6": "=ADDRESS(3,2,4,FALSE)", "L7": '=ADDRESS(3,2,1,TRUE,"Sheet 2")',
    "L8": "=ADDRESS(H1,H2+1)", "L9": "=ADDRESS(0,2)", "L10": "=ADDRESS(3,0)", "L11": '=ADDRESS(3,2,,,"Sheet 2")',
    "L12": "=ADDRESS(3.9,2.9)", "L13": "=ADDRESS(1048577,1)", "L14": "=ADDRESS(3,28)", "L15": "=ADDRESS(3,2,2,FALSE)",
    "L16": "=ADDRESS(3,2,3,FALSE)", "L17": '=ADDRESS(1,1,1,TRUE,"it\'s")', "L18": "=INDIRECT(ADDRESS(H1+1,2))",
    "L19": '=ADDRESS(3,2,1,TRUE,"x.y")', "L20": '=ADDRESS("a",1)', "L21": "=ADDRESS(1/0,1)",
}
ROWS_COLUMNS = {
    "M1": "=ROW()", "M2": "=COLUMN()", "M3": "=ROW(C5)", "M4": "=COLUMN(C5:E9)", "M5": "=ROW(A3:A7)",
    "M6": "=SUM(ROW(A1:A5))", "M7": "=SUMPRODUCT(ROW(A1:A5))", "M8": "=ROW()-1", "M9": "=ROW(OFFSET(A1,H1,0))",
    "M10": '=COLUMN(INDIRECT("C1"))', "M11": '=ROWS(INDIRECT("A1:B5"))', "M12": '=ROW(INDIRECT("x"))',
    "M13": "=COLUMNS(A1:INDEX(A1:E1,H12))", "M14": "=ROW(1:3)",
}
RANGES = {
    "P1": "=SUM(A1:INDEX(A1:A10,H1+1))",
    "P2": "=SUM(INDEX(A1:A10,2):INDEX(A1:A10,H3+1))",
    "P3": '=SUM(INDIRECT("A2"):INDIRECT("A"&H4+2))',
    "P4": "=SUM(A1:OFFSET(A1,2,1))",
    "P5": "=SUM(OFFSET(A1,1,0):A5)",
    "P6": "=SUM(CHOOSE(2,A1,A2):A4)",
    "P7": "=SUM(IF(H1>2,A2,A1):A4)",
    "P8": "=SUM(A1:INDEX(A1:B10,3,2))",
    "P9": "=SUM(A1:INDEX(A1:A10,0))",
    "P10": "=ROWS(A1:INDEX(A1:A10,H5+1))",
    "P11": "=SUM(A1:A3:B2)",
    "P12": "=SUM(INDEX(A1:A10,3):A1)",
    "P13": "=SUM(A1:INDEX(A1:A10,11))",
    "P14": "=SUM(CHOOSE(H1,A1,A2,A3):INDEX(B1:B12,H2+2))",
}
# Reads through OFFSET of cells computed later in the sheet (and from other OFFSETs): the graph
# must order them by where they land.
CHAINS = {
    "Y1": "=OFFSET(Z1,0,0)*2",
    "Y2": "=SUM(OFFSET(Z1,0,0,3,1))",
    "Y3": "=OFFSET(Z1,H1,0)",
    "Y4": "=OFFSET(AA1,0,0)*2",
    "Y5": "=OFFSET(Z1,H9,0)+1",
    "AA1": "=Y3+1",
}
ARRAYS = {
    "S1:S5": "=ROW(A3:A7)",
    "T1:X1": "=OFFSET(A1:E1,2,0)",
    "T2:V2": "=OFFSET(A1,H1,0,1,3)",
    "S7:S9": "=OFFSET(A1,ROW()-1,0)",           # an array of one-cell references
    "T4:V4": "=COLUMN()",
    "T6:U7": "=ROW()*10+COLUMN()",
    "S11:S11": "=SUM(OFFSET(A1,H1,0,2,1)*2)",
}


def _values(ws, moved: bool, positions: list[int]) -> None:
    rng = random.Random(7)
    for r in range(1, 13):
        ws.cell(r, 1, r * 10 + (rng.randint(-4, 4) if moved else 0))
        ws.cell(r, 2, r + 0.5)
        if r % 4:
            ws.cell(r, 3, f"t{r}")
        ws.cell(r, 8, positions[r - 1])
        ws.cell(r, 9, r * 100)


def reference_book(path: Path, moved: bool = False, positions: list[int] | None = None) -> Path:
    """Every construct on sheet s (positions in column H), the word and k-means patterns on
    w and k, and a second sheet with a space in its name. `moved`: other inputs and positions."""
    wb = Workbook()
    ws = wb.active
    ws.title = "s"
    _values(ws, moved, positions or (MOVED if moved else POSITIONS))
    for block in (OFFSETS, INDIRECTS, ADDRESSES, ROWS_COLUMNS, RANGES, CHAINS):
        for cell, text in block.items():
            ws[cell] = text
    for r in range(1, 13):
        ws[f"F{r}"] = f"=OFFSET($A$1,$H{r},1)"
        ws[f"G{r}"] = f"=SUM(OFFSET(A{r},0,0,$H{r},1))"       # heights differ from row to row
        ws[f"K{r}"] = '=INDIRECT("B"&ROW())'
        ws[f"Q{r}"] = f"=SUM($A$1:INDEX($A$1:$A$12,$H{r}+1))"
        ws[f"Z{r}"] = f"=A{r}*3"
        if r > 1:
            ws[f"N{r}"] = "=INDEX($A$1:$A$12,ROW()-1)"
    for ref, text in ARRAYS.items():
        ws[ref.split(":")[0]] = ArrayFormula(ref, text)
    s2 = wb.create_sheet("Sheet 2")
    for r in range(1, 11):
        for c in range(1, 4):
            s2.cell(r, c, r * c + (0.25 if moved else 0))
    s2["C6"] = "=SUM(s!A1:A3)"
    wb.defined_names["tbl"] = DefinedName("tbl", attr_text="s!$A$2:$A$4")
    _word(wb.create_sheet("w"), moved)
    _kmeans(wb.create_sheet("k"), moved)
    wb.save(path)
    return path


def _word(ws, moved: bool) -> None:
    """A word-vector sheet: OFFSET($B$2,$J18,O$2) copied over a block picks embedding entries."""
    for r in range(2, 9):
        for c in range(2, 7):
            ws.cell(r, c, round(math.sin(r * 7 + c), 4))
    for j, off in enumerate([0, 1, 3, 2] if not moved else [2, 0, 1, 4], start=15):
        ws.cell(2, j, off)
    for r, word in zip(range(18, 23), [1, 4, 0, 6, 2] if not moved else [3, 3, 5, 0, 1]):
        ws.cell(r, 10, word)
        for c in range(15, 19):
            ws.cell(r, c).value = f"=OFFSET($B$2,$J{r},{a1(2, c).replace('2', '$2')})"


def _kmeans(ws, moved: bool) -> None:
    """A k-means sheet addressing its points on another sheet, and its own cells by ROW()."""
    ws["A1"] = 2 if moved else 1
    for r in range(2, 7):
        ws.cell(r, 2).value = '=INDIRECT(ADDRESS(ROW()+$A$1,COLUMN()-1,,,"Sheet 2"))'
        ws.cell(r, 3).value = '=INDIRECT(ADDRESS(ROW()+$A$1,COLUMN()-1,,,"Sheet 2"))'
        ws.cell(r, 4).value = '=INDIRECT("B"&ROW())+INDIRECT("C"&ROW())'
        ws.cell(r, 5).value = "=(B{0}-$B$8)^2+(C{0}-$C$8)^2".format(r)
    ws["B8"], ws["C8"] = "=AVERAGE(B2:B6)", "=AVERAGE(C2:C6)"


@pytest.fixture(scope="module")
def judged(tmp_path_factory) -> tuple[Path, Path, Path]:
    """LibreOffice's values for the base book, a perturbed one, and the base with only its
    positions (column H) moved."""
    if find_soffice() is None:
        pytest.skip("LibreOffice (soffice) is not installed: no judge")
    d = tmp_path_factory.mktemp("refs")
    books = [reference_book(d / "base.xlsx"), reference_book(d / "moved.xlsx", moved=True),
             reference_book(d / "positions.xlsx", positions=MOVED)]
    return tuple(recalculate_many([(b, b.with_suffix(".lo.xlsx")) for b in books]))  # type: ignore[return-value]


def _formula_cells(wb) -> list[tuple[str, tuple[int, int]]]:
    out = []
    for name, sheet in wb.sheets.items():
        cells = set(sheet.formulas) | {p for area, _ in sheet.arrays for p in area.cells()}
        out.extend((name, p) for p in sorted(cells))
    return out


def _disagreements(wb, grids) -> list[str]:
    bad = []
    for sheet, pos in _formula_cells(wb):
        want, got = wb.sheets[sheet].values.get(pos), grids.value(sheet, *pos)
        if not agrees(want, got):
            bad.append(f"{sheet}!{a1(*pos)}: LibreOffice {want!r}, xl2nn {got!r}")
    return bad


@needs_lo
@pytest.mark.parametrize("which", [0, 1], ids=["base", "moved"])
def test_every_reference_construct_agrees_with_libreoffice(judged, which):
    wb, graph = load(judged[which])
    recalc = recalculate(wb, graph)
    assert not recalc.skipped, {str(graph.families[f].area): why for f, why in recalc.skipped.items()}
    assert not _disagreements(wb, recalc.grids)
    cells = _formula_cells(wb)
    kinds = [type(wb.sheets[s].values.get(p)).__name__ for s, p in cells]
    assert len(cells) >= 230 and kinds.count("CellError") >= 20 and kinds.count("str") >= 15, (len(cells), kinds.count("CellError"), kinds.count("str"))


@needs_lo
def test_libreoffice_really_computed(judged):
    s = read_workbook(judged[0]).sheets["s"]
    assert s.values.get(parse_a1("E1")) == 3.5 and s.values.get(parse_a1("J3")) == 6.0
    assert s.values.get(parse_a1("P1")) == 60.0


@needs_lo
def test_positions_that_move_after_the_graph_was_built(judged):
    """The graph is ordered by where references land at the workbook's values; recalculated with
    other inputs (the perturbed positions put in as overrides), they land elsewhere, on cells
    computed later: those are computed first, on demand."""
    wb, graph = load(judged[0])
    overrides = {"s": {(r, 8): float(v) for r, v in enumerate(MOVED, start=1)}}
    recalc = recalculate(wb, graph, overrides=overrides)
    assert not recalc.skipped
    moved = read_workbook(judged[2])
    for sheet in wb.sheets:
        wb.sheets[sheet].values = moved.sheets[sheet].values      # LibreOffice's values there
    assert not _disagreements(wb, recalc.grids)


@needs_lo
def test_excel_codes_where_libreoffice_differs(judged):
    """Excel documents #REF! for OFFSET off the sheet and for a height of 0 (LibreOffice:
    #VALUE!), and #VALUE! for ADDRESS's abs_num outside 1..4 (LibreOffice reads 5 as 1)."""
    wb, graph = load(judged[0])
    grids = recalculate(wb, graph).grids
    assert grids.value("s", *parse_a1("E13")) == CellError("#REF!")
    assert grids.value("s", *parse_a1("E14")) == CellError("#REF!")
    assert grids.value("s", *parse_a1("P13")) == CellError("#REF!")
    path = judged[0].parent / "address5.xlsx"
    book = Workbook()
    book.active["A1"] = "=ADDRESS(3,2,5)"
    book.active["A2"] = "=OFFSET(B1,0,0,1048577,1)"
    book.save(path)
    wb2, g2 = load(path)
    grids2 = recalculate(wb2, g2).grids
    assert grids2.value("Sheet", 1, 1) == CellError("#VALUE!")
    assert grids2.value("Sheet", 2, 1) == CellError("#REF!")


@needs_lo
def test_the_graph_knows_what_references_read(judged):
    wb, graph = load(judged[0])
    at = lambda cell, sheet="s": graph.family_at(sheet, *parse_a1(cell))  # noqa: E731
    z = at("Z1")
    assert z.id in at("Y1").deps and z.id in at("Y2").deps and at("AA1").id in at("Y4").deps
    assert at("Y3").id in at("AA1").deps
    order = {f: i for i, f in enumerate(graph.order)}
    assert order[z.id] < order[at("Y1").id] and order[at("AA1").id] < order[at("Y4").id]
    assert any(t.sheet == "s" and t.c1 == 26 for t in at("Y2").targets)
    # OFFSET's base is a position, not a read: OFFSET($A$1,...) does not depend on A1's owner
    assert at("F1").deps == set() or all(graph.families[d].sheet != "s" or d != at("A1") for d in at("F1").deps)
    assert at("C6", "Sheet 2").id in at("J22").deps
    # nothing is listed as a volatile snapshot any more
    rc, out, err = run_cli("inspect", str(judged[0]), "--json")
    assert rc == 0, err
    info = json.loads(out)
    assert info["volatile"] == {} and info["unsupported"] == {}


def test_what_is_not_computed_is_listed(tmp_path):
    """Where Excel and LibreOffice disagree (a negative height, a range between sheets) or one
    formula means one value per reference of an array, the cells keep their cached values and are
    listed; a reference landing on cells computed from itself is a circular reference."""
    wb = Workbook()
    ws = wb.active
    ws.title = "s"
    for r in range(1, 6):
        ws.cell(r, 1, r)
    ws["B1"] = "=SUM(OFFSET(A5,0,0,-2,1))"
    ws["B2"] = "=SUM(A1:INDIRECT(\"'t'!A1\"))"
    ws["B3"] = ArrayFormula("B3", "=SUM(OFFSET(A1,{0;1;2},0))")
    ws["C1"] = "=OFFSET(C1,0,0)+1"                 # lands on itself
    ws["C2"] = "=OFFSET(C3,0,0)"
    ws["C3"] = "=C2+1"                             # lands on a cell computed from it
    ws["D1"] = "=A1*2"
    wb.create_sheet("t")["A1"] = 1
    path = tmp_path / "not.xlsx"
    wb.save(path)
    book, graph = load(path)
    recalc = recalculate(book, graph)
    why = {str(graph.families[f].area): w for f, w in recalc.skipped.items()}
    assert "negative height" in why["s!B1"] and "two sheets" in why["s!B2"]
    assert "array of references" in why["s!B3"]
    assert why["s!C1"].startswith("circular reference") and why["s!C2"].startswith("circular reference")
    assert recalc.grids.value("s", 1, 4) == 2.0
    rc, out, err = run_cli("eval", str(path), "-o", str(tmp_path / "out.xlsx"))
    assert rc == 0 and "s!B1" in err and "s!B2" in err


# ------------------------------------------------------------------ models

def collab_book(path: Path, users: int = 15, movies: int = 15, factors: int = 5, ratings: int = 100,
                seed: int = 0) -> Path:
    """fast.ai's collaborative-filtering sheet: user and movie embedding tables (the factors and
    a bias each) as Solver's changing cells; one row per rating, whose user and movie embeddings
    are looked up by OFFSET($C$3:$G$3,A22,0) entered as an array formula per row; the
    prediction is their SUMPRODUCT plus the biases, the loss the mean squared error. The last
    user rates nothing."""
    rng = random.Random(seed)
    k = factors
    col = lambda c: a1(1, c)[:-1]           # noqa: E731  (column letters)
    wb = Workbook()
    ws = wb.active
    ws.title = "collab"
    ws["B2"], ws.cell(2, 4 + k).value = "users", "movies"
    for u in range(users):
        ws.cell(3 + u, 2, f"u{u}")
        for j in range(k + 1):              # the factors, then the bias
            ws.cell(3 + u, 3 + j, round(rng.uniform(-0.5, 0.5), 4) if j < k else 0.0)
    for m in range(movies):
        ws.cell(3 + m, 4 + k, f"m{m}")
        for j in range(k + 1):
            ws.cell(3 + m, 5 + k + j, round(rng.uniform(-0.5, 0.5), 4) if j < k else 0.0)
    user_row = f"$C$3:${col(2 + k)}$3"
    movie_row = f"${col(5 + k)}$3:${col(4 + 2 * k)}$3"
    ub, mb = f"${col(3 + k)}$3", f"${col(5 + 2 * k)}$3"
    ue, me = (col(4), col(3 + k)), (col(4 + k), col(3 + 2 * k))
    ubc, mbc, pred, err = (col(c) for c in range(4 + 2 * k, 8 + 2 * k))
    pairs = rng.sample([(u, m) for u in range(users - 1) for m in range(movies)], ratings)
    top = max(22, 5 + max(users, movies))          # the ratings below both tables
    for i, (u, m) in enumerate(pairs):
        r = top + i
        ws.cell(r, 1, u)
        ws.cell(r, 2, m)
        ws.cell(r, 3, rng.choice([1, 2, 3, 3.5, 4, 4.5, 5]))
        ws[f"{ue[0]}{r}"] = ArrayFormula(f"{ue[0]}{r}:{ue[1]}{r}", f"=OFFSET({user_row},A{r},0)")
        ws[f"{me[0]}{r}"] = ArrayFormula(f"{me[0]}{r}:{me[1]}{r}", f"=OFFSET({movie_row},B{r},0)")
        ws[f"{ubc}{r}"] = f"=OFFSET({ub},A{r},0)"
        ws[f"{mbc}{r}"] = f"=OFFSET({mb},B{r},0)"
        ws[f"{pred}{r}"] = f"=SUMPRODUCT({ue[0]}{r}:{ue[1]}{r},{me[0]}{r}:{me[1]}{r})+{ubc}{r}+{mbc}{r}"
        ws[f"{err}{r}"] = f"=({pred}{r}-C{r})^2"
    ws[f"{err}{top - 2}"] = f"=AVERAGE({err}{top}:{err}{top + ratings - 1})"
    adj = f"collab!$C$3:${col(3 + k)}${2 + users},collab!${col(5 + k)}$3:${col(5 + 2 * k)}${2 + movies}"
    for name, text in (("solver_opt", f"collab!${err}${top - 2}"), ("solver_adj", adj), ("solver_typ", "2")):
        ws.defined_names[name] = DefinedName(name, attr_text=text, hidden=True)
    wb.save(path)
    return path


@pytest.fixture(scope="module")
def collab(tmp_path_factory) -> Path:
    if find_soffice() is None:
        pytest.skip("LibreOffice (soffice) is not installed: no judge")
    return with_libreoffice_values(collab_book(tmp_path_factory.mktemp("collab") / "collab.xlsx"))


@needs_lo
def test_collaborative_filtering_verifies(collab):
    rc, out, err = run_cli("verify", str(collab))
    assert rc == 0, out + err
    assert "ok   collab" in out and "180 parameters at 3 weight points" in out
    assert "traced program vs interpreter at 4 weight points" in out


@needs_lo
def test_collaborative_filtering_trains_and_libreoffice_agrees(collab, tmp_path):
    out_path = tmp_path / "collab.trained.xlsx"
    rc, out, err = run_cli("train", str(collab), "--steps", "300", "--lr", "0.5", "-o", str(out_path), "--json")
    assert rc == 0, err
    info = json.loads(out)
    assert info["final_loss"] < 0.1 * info["start_loss"], info
    assert info["interpreted"] == ""            # constant positions: every lookup traced, a gather
    lo = recalculate_many([(out_path, tmp_path / "collab.lo.xlsx")])[0]
    want = read_workbook(lo).sheets["collab"].values.get(parse_a1("Q20"))
    assert math.isclose(want, info["final_loss"], rel_tol=1e-9), (want, info["final_loss"])
    print(f"collab: loss {info['start_loss']} -> {info['final_loss']}, LibreOffice {want}")


@needs_lo
def test_the_gradient_reaches_the_embeddings_looked_up(collab):
    c = compile_workbook(collab)
    loss = c.model()
    loss.backward()
    users = c.model.weights["collab_C3_H17"].grad
    movies = c.model.weights["collab_J3_O17"].grad
    assert torch.count_nonzero(users[:14]).item() > 60 and torch.count_nonzero(users[14]).item() == 0
    assert torch.count_nonzero(movies).item() > 60
    assert math.isclose(loss.item(), read_workbook(collab).sheets["collab"].values.get(parse_a1("Q20")),
                        rel_tol=1e-12)


def _offset_model(path: Path, position: str) -> Path:
    """y = OFFSET(weights...)·x + b per row, the weights looked up by a computed position."""
    wb = Workbook()
    ws = wb.active
    ws.title = "m"
    for r in range(1, 7):
        ws.cell(r, 1, float(r))
        ws.cell(r, 2, 2.0 * r + 1)
        ws[f"D{r}"] = f"=({position.format(r=r)}*A{r}+$C$6-B{r})^2"
    for r, v in enumerate([0.3, 0.7, -0.4, 1.1, 0.2, 0.1], start=1):     # five weights, a bias
        ws.cell(r, 3, v)
    ws["F1"] = "=AVERAGE(D1:D6)"
    for name, text in (("solver_opt", "m!$F$1"), ("solver_adj", "m!$C$1:$C$6"), ("solver_typ", "2")):
        ws.defined_names[name] = DefinedName(name, attr_text=text, hidden=True)
    wb.save(path)
    return path


def test_positions_from_constants_are_a_gather(tmp_path):
    src = _offset_model(tmp_path / "const.xlsx", "OFFSET($C$1,MOD({r},5),0)")
    c = compile_workbook(src)
    c.model().backward()
    grad = c.model.weights["m_C1_C6"].grad.reshape(-1)
    assert all(float(g) != 0 for g in grad)     # rows 1..6 pick C2..C5, C1, C2 (and C6 is the bias)
    rc, out, err = run_cli("verify", str(src))
    assert rc == 0 and "traced program vs interpreter" in out, out + err


def test_positions_from_the_parameters_are_exact_and_not_frozen(tmp_path):
    """OFFSET($C$1, INT(ABS($C$6)*10)) moves with the bias weight: each forward looks up what the
    sheet would at those weights (the family interpreted: no torch form for a position read on
    the host), the gradient flows into the entries picked, none through the position."""
    src = _offset_model(tmp_path / "moving.xlsx", "OFFSET($C$1,MOD(INT(ABS($C$6)*10+{r}),5),0)")
    c = compile_workbook(src)
    from xl2nn.compiler.program import Program
    program = Program(c.model)
    assert program.mode == "mixed" and "OFFSET" in program.fallback
    model = c.model
    for bias in (0.1, 0.25, 0.47):
        with torch.no_grad():
            model.weights["m_C1_C6"][5, 0] = bias
        want = sum((([0.3, 0.7, -0.4, 1.1, 0.2][(int(abs(bias) * 10) + r) % 5]) * r + bias - (2 * r + 1)) ** 2
                   for r in range(1, 7)) / 6
        got = program()
        assert math.isclose(got.item(), want, rel_tol=1e-12) and math.isclose(model().item(), want, rel_tol=1e-12)
    rc, out, err = run_cli("train", str(src), "--lr", "0.01", "--steps", "30", "-o", str(tmp_path / "t.xlsx"),
                           "--json")
    assert rc == 0, err
    info = json.loads(out)
    assert "OFFSET" in info["interpreted"] and info["final_loss"] < info["start_loss"]


@needs_lo
def test_word_and_kmeans_sheets_as_models(judged, tmp_path):
    """The word sheet's embedding table as parameters (OFFSET($B$2,$J18,O$2) over a block), the
    k-means sheet's points read through INDIRECT(ADDRESS(...)) as parameters: gradients check."""
    src = tmp_path / "w.xlsx"
    shutil.copyfile(judged[0], src)
    from openpyxl import load_workbook
    book = load_workbook(src)
    w = book["w"]
    w["T18"] = "=SUMSQ(O18:R22)"
    w.defined_names["solver_opt"] = DefinedName("solver_opt", attr_text="w!$T$18", hidden=True)
    w.defined_names["solver_adj"] = DefinedName("solver_adj", attr_text="w!$B$2:$F$8", hidden=True)
    k = book["k"]
    k["F1"] = "=SUM(E2:E6)"
    book.save(src)
    rc, out, err = run_cli("verify", str(src), "--sheet", "w")
    assert rc == 0 and "35 parameters" in out, out + err
    c = compile_workbook(src, sheet="w")
    c.model().backward()
    grad = c.model.weights["w_B2_F8"].grad
    used = {(word, off) for word in [1, 4, 0, 6, 2] for off in [0, 1, 3, 2]}   # B2 moved down word, right off
    for i in range(7):
        for j in range(5):
            assert (float(grad[i, j]) != 0) == ((i, j) in used), (i, j)
    rc, out, err = run_cli("verify", str(src), "--sheet", "k", "--params", "'Sheet 2'!A2:B8", "--loss", "k!F1")
    assert rc == 0, out + err


def test_embedding_lookup_values_equal_the_sheet_at_new_weights(tmp_path):
    """The collaborative-filtering model at other weights equals the sheet recalculated there."""
    src = collab_book(tmp_path / "c.xlsx", users=6, movies=5, factors=3, ratings=12, seed=4)
    c = compile_workbook(src)
    rng = np.random.default_rng(0)
    for _ in range(2):
        weights = {n: rng.normal(size=tuple(p.shape)) for n, p in c.model.weights.items()}
        with torch.no_grad():
            for n, p in c.model.weights.items():
                p.copy_(torch.as_tensor(weights[n]))
        from xl2nn.writeback import parameter_cells
        grids = recalculate(c.workbook, c.graph, overrides=parameter_cells(c.model.param_areas, weights)).grids
        want = grids.value(*c.spec.objective)
        assert math.isclose(float(c.model()), want, rel_tol=1e-12)
