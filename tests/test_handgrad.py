"""verify --grad on small workbooks and on the backprop sample (a block: a row per SGD step, a
column per weight), recurrences that run across several columns, and which Solver model is used
when several sheets have one."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from xl2nn.api import load
from xl2nn.cells import col_number
from xl2nn.compiler.grid import recalculate
from xl2nn.reader import read_workbook
from xl2nn.writer import patch_workbook

from .conftest import ROOT, run_cli, solver_workbook

openpyxl = pytest.importorskip("openpyxl")

X = [0.5, 1.0, 1.5, 2.0, 2.5, 3.0]
Y = [2.1, 2.9, 4.2, 4.9, 6.1, 7.0]
LR = 0.05


def sgd_sheet(path: Path, wrong: dict[str, str] | None = None) -> Path:
    """A teacher's SGD sheet: row k's b and a are row k-1's new b and a (formulas), so the
    b/new-b columns and the a/new-a columns read each other row by row."""
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "sgd"
    ws["B1"] = LR
    for r, (x, y) in enumerate(zip(X, Y), start=2 + 1):
        ws[f"A{r}"], ws[f"B{r}"] = x, y
        if r == 3:
            ws["C3"], ws["D3"] = 0.0, 0.0
        else:
            ws[f"C{r}"], ws[f"D{r}"] = f"=G{r - 1}", f"=H{r - 1}"
        ws[f"E{r}"] = f"=(D{r}*A{r}+C{r}-B{r})^2"                  # err²
        ws[f"F{r}"] = f"=2*(D{r}*A{r}+C{r}-B{r})"                   # de/db by hand
        ws[f"G{r}"] = f"=C{r}-$B$1*F{r}"                             # new b
        ws[f"H{r}"] = f"=D{r}-$B$1*2*(D{r}*A{r}+C{r}-B{r})*A{r}"     # new a, de/da inline
        ws[f"I{r}"] = f"=2*(D{r}*A{r}+C{r}-B{r})*A{r}"              # de/da by hand
    for cell, formula in (wrong or {}).items():
        ws[cell] = formula
    wb.save(path)
    return path


def reference_sgd() -> list[tuple[float, float, float, float]]:
    """(b, a, de/db, de/da) per row, in plain Python."""
    b = a = 0.0
    out = []
    for x, y in zip(X, Y):
        e = a * x + b - y
        out.append((b, a, 2 * e, 2 * e * x))
        b, a = b - LR * 2 * e, a - LR * 2 * e * x
    return out


main = run_cli


def hand_json(out: str) -> dict:
    """The (first) hand-written derivatives report of `verify --json`: one report, or a list of
    them now that verify also runs declared checks."""
    hand = json.loads(out)["hand_gradients"]
    return hand[0] if isinstance(hand, list) else hand


def test_recurrence_across_columns_is_not_circular(tmp_path):
    wb, graph = load(sgd_sheet(tmp_path / "sgd.xlsx"))
    grids = recalculate(wb, graph).grids
    for r, (b, a, db, da) in enumerate(reference_sgd(), start=3):
        assert grids.value("sgd", r, 3) == pytest.approx(b, rel=1e-12, abs=1e-15)
        assert grids.value("sgd", r, 4) == pytest.approx(a, rel=1e-12, abs=1e-15)
        assert grids.value("sgd", r, 6) == pytest.approx(db, rel=1e-12)
        assert grids.value("sgd", r, 9) == pytest.approx(da, rel=1e-12)


def test_a_real_cycle_between_columns_is_still_named(tmp_path):
    rows = [[1.0], [2.0], [3.0]]
    formulas = {f"B{r}": f"=A{r}+C{r}" for r in (1, 2, 3)} | {f"C{r}": f"=B{r}*2" for r in (1, 2, 3)}
    f = solver_workbook(tmp_path / "m.xlsx", rows, formulas | {"D1": "=SUM(C1:C3)"}, "A1:A3", "D1")
    r = subprocess.run([sys.executable, "-m", "xl2nn.cli", "inspect", str(f)], capture_output=True, text=True)
    assert r.returncode == 2 and "circular reference" in r.stderr and "model!B1" in r.stderr


def test_hand_written_derivatives_pass_row_by_row(tmp_path):
    f = sgd_sheet(tmp_path / "sgd.xlsx")
    want = reference_sgd()
    for grad, wrt, k in (("F3:F8", "C3:C8", 2), ("I3:I8", "D3:D8", 3)):
        rc, out, err = main("verify", str(f), "--grad", grad, "--of", "E3:E8", "--wrt", wrt, "--json")
        assert rc == 0, out + err
        report = hand_json(out)
        assert report["ok"] and len(report["rows"]) == 6
        assert [row["row"] for row in report["rows"]] == list(range(3, 9))
        for row, ref in zip(report["rows"], want):
            assert row["autograd"] == pytest.approx(ref[k], rel=1e-12)
        # Row k's error also depends on row k-1's b (through row k's a): said, not assumed away.
        assert report["chained"] == ["sgd!E4", "sgd!" + wrt.split(":")[0]]
        doc = json.loads(out)               # no Solver-model check ran (either JSON layout of verify)
        assert not doc.get("gradients") and not doc.get("objective") and not doc.get("models")


def test_a_wrong_hand_written_derivative_names_its_row(tmp_path):
    f = sgd_sheet(tmp_path / "sgd.xlsx", wrong={"F6": "=(D6*A6+C6-B6)"})        # forgot the 2
    rc, out, _ = main("verify", str(f), "--grad", "F3:F8", "--of", "E3:E8", "--wrt", "C3:C8")
    assert rc == 1
    assert "FAIL 1 of 6 rows differ; first: row 6: sgd!F6 recomputes to" in out
    assert "autograd d sgd!E6 / d sgd!C6 = " in out and out.rstrip().endswith("verify: FAILED")
    rc, out, _ = main("verify", str(f), "--grad", "F3:F8", "--of", "E3:E8", "--wrt", "C3:C8", "--json")
    report = hand_json(out)
    assert rc == 1 and [row["row"] for row in report["rows"] if not row["ok"]] == [6]
    assert report["first_failure"]["grad_cell"] == "sgd!F6"


@pytest.mark.parametrize("flags,words", [
    (["--grad", "F3:F8", "--of", "E3:E7", "--wrt", "C3:C8"], ["does not fit", "6×1", "5×1"]),
    (["--grad", "F3:F8", "--of", "E3:E8", "--wrt", "C3:C7"], ["same shape", "6×1", "5×1"]),
    (["--grad", "F3:F8", "--of", "E3:E8"], ["--grad, --of and --wrt go together"]),
    (["--grad", "F3:F8", "--of", "E3:E8", "--wrt", "C3:C8", "--loss", "E3"], ["one or the other"]),
    (["--grad", "F3:F8", "--of", "A3:A8", "--wrt", "C3:C8"], ["--of cell sgd!A3 is not a formula"]),
    (["--grad", "F3:F8", "--of", "E3:E8", "--wrt", "C3:C8", "--sheet", "nope"], ["no sheet named 'nope'"]),
    (["--grad", "F3:F8,F9", "--of", "E3:E8", "--wrt", "C3:C8"], ["side by side", "sgd!F9 has 1"]),
    (["--grad", "F3:F8", "--of", "E3:E8,E9", "--wrt", "C3:C8"], ["--of", "must be one range"]),
])
def test_bad_grad_flags_get_one_line(tmp_path, flags, words):
    f = sgd_sheet(tmp_path / "sgd.xlsx")
    rc, out, err = main("verify", str(f), *flags)
    assert rc == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("xl2nn: error:")
    for w in words:
        assert w in err


def _two_models(path: Path, active: int) -> Path:
    from openpyxl.workbook.defined_name import DefinedName
    wb = openpyxl.Workbook()
    wb.active.title = "notes"
    for name in ("first", "second"):
        ws = wb.create_sheet(name)
        ws["A1"], ws["A2"] = 1.0, "=(A1-3)^2"
        for key, text in (("solver_opt", f"{name}!$A$2"), ("solver_adj", f"{name}!$A$1"), ("solver_typ", "2")):
            ws.defined_names[key] = DefinedName(key, attr_text=text, hidden=True)
    wb.active = active
    wb.save(path)
    return path


def test_several_models_the_sheet_it_opens_on_decides(tmp_path):
    rc, out, err = main("inspect", str(_two_models(tmp_path / "a.xlsx", active=2)), "--json")
    assert rc == 0, err
    assert json.loads(out)["model"]["objective"] == "second!A2"
    # None on the sheet it opens on: inspect lists both, shows neither in full, says how to pick
    rc, out, err = main("inspect", str(_two_models(tmp_path / "b.xlsx", active=0)))
    assert rc == 0 and err == ""
    assert "minimise first!A2" in out and "minimise second!A2" in out
    assert [line for line in out.splitlines() if "--sheet NAME" in line] == [
        "model     Solver models on first, second, none on the sheet the workbook opens on ('notes'): "
        "pick one with --sheet NAME"]


# --------------------------------------------------------------------------- blocks: backprop.xlsx

BACKPROP = ROOT / "sample_workbooks" / "backprop.xlsx"
BLOCK = ("--grad", "S4:Z53", "--of", "R4:R53", "--wrt", "B4:E53,J4:M53")   # 50 steps × 8 weights
W_COLS = "BCDEJKLM"                                                      # w1..w8
GRAD_COLS = "STUVWXYZ"                                                   # ∂E/∂w1..∂E/∂w8


def mazur_loss(w: list[float]) -> float:
    """Mazur's 2-2-2 network in plain Python: E_total for weights w1..w8."""
    i1, i2, t1, t2, b1, b2 = 0.05, 0.10, 0.01, 0.99, 0.35, 0.60
    sig = lambda x: 1 / (1 + math.exp(-x))                              # noqa: E731
    h1, h2 = sig(w[0] * i1 + w[1] * i2 + b1), sig(w[2] * i1 + w[3] * i2 + b1)
    o1, o2 = sig(w[4] * h1 + w[5] * h2 + b2), sig(w[6] * h1 + w[7] * h2 + b2)
    return 0.5 * (t1 - o1) ** 2 + 0.5 * (t2 - o2) ** 2


def _weights(values, row: int) -> list[float]:
    return [values[(row, col_number(c))] for c in W_COLS]


def test_backprop_block_passes_every_step_and_weight():
    rc, out, err = main("verify", str(BACKPROP), *BLOCK, "--json")
    assert rc == 0, out + err
    report = hand_json(out)
    assert report["ok"] and report["shape"] == [50, 8] and len(report["rows"]) == 400
    assert [(c["row"], c["column"]) for c in report["rows"][:9]] == \
        [(4, c) for c in GRAD_COLS] + [(5, "S")]
    assert [c["label"] for c in report["columns"]] == [f"∂E/∂w{i}" for i in range(1, 9)]
    assert [c["wrt_label"] for c in report["columns"]] == [f"w{i}" for i in range(1, 9)]
    assert report["columns"][4]["wrt"] == "backprop!J4:J53" and report["columns"][4]["of"] == "backprop!R4:R53"
    # Each row's weights are cut loose (they are the previous row's new w), so E_total of a row
    # depends on that row's weights alone: not chained.
    assert report["chained"] is None
    # Mazur's first step: E_total 0.298371109, ∂E/∂w5 = 0.082167041, ∂E/∂w1 = 0.000438568.
    first = {c["column"]: c["autograd"] for c in report["rows"][:8]}
    assert first["W"] == pytest.approx(0.082167041, abs=5e-10)
    assert first["S"] == pytest.approx(0.000438568, abs=5e-10)
    rc, out, err = main("verify", str(BACKPROP), *BLOCK)
    assert rc == 0 and "  ok   50 rows × 8 columns  max rel" in out, out + err
    assert "       W       ∂E/∂w5  d R4:R53 / d J4:J53 (w5)" in out


def test_backprop_autograd_agrees_with_finite_differences():
    """Autograd's numbers, not only their agreement with the sheet: central differences of
    E_total computed in plain Python at each checked row's weights."""
    rc, out, _ = main("verify", str(BACKPROP), *BLOCK, "--json")
    cells = {(c["row"], c["column"]): c["autograd"] for c in hand_json(out)["rows"]}
    values = load(BACKPROP)[0].sheets["backprop"].values
    assert mazur_loss(_weights(values, 4)) == pytest.approx(0.298371109, abs=5e-10)
    h = 1e-6
    for row in (4, 17, 53):
        w = _weights(values, row)
        assert mazur_loss(w) == pytest.approx(values[(row, 18)], rel=1e-12)       # R: E_total
        for j, col in enumerate(GRAD_COLS):
            up, down = list(w), list(w)
            up[j] += h
            down[j] -= h
            fd = (mazur_loss(up) - mazur_loss(down)) / (2 * h)
            assert cells[(row, col)] == pytest.approx(fd, rel=1e-6, abs=1e-11), (row, col)


def test_backprop_block_takes_one_backward_pass_per_row(monkeypatch):
    import torch
    calls = []
    real = torch.autograd.grad
    monkeypatch.setattr(torch.autograd, "grad", lambda *a, **k: calls.append(1) or real(*a, **k))
    rc, _, _ = main("verify", str(BACKPROP), *BLOCK)
    assert rc == 0 and len(calls) == 50           # not 400: each pass gives the row's 8 derivatives


def test_backprop_wrong_formula_names_row_and_column(tmp_path):
    """∂E/∂w5 of one step written with out_h2 (I) where out_h1 (G) belongs: ∂E/∂w6's term."""
    good = read_workbook(BACKPROP).sheets["backprop"].values[(20, 23)]          # W20
    wb = openpyxl.load_workbook(BACKPROP)
    ws = wb["backprop"]
    assert ws["W20"].value.endswith("*G20")
    ws["W20"] = ws["W20"].value[:-len("G20")] + "I20"
    bad = tmp_path / "slip.xlsx"
    wb.save(bad)                                   # openpyxl keeps no cached values: recomputed ones are checked
    rc, out, _ = main("verify", str(bad), *BLOCK)
    assert rc == 1 and out.rstrip().endswith("verify: FAILED")
    assert ("FAIL 1 of 400 cells differ (in 1 of 50 rows); first: row 20, column W (∂E/∂w5): "
            "backprop!W20 recomputes to ") in out
    assert "autograd d backprop!R20 / d backprop!J20 = " in out
    assert "       W       ∂E/∂w5  d R4:R53 / d J4:J53 (w5)" in out and "FAIL 1 row\n" in out
    rc, out, _ = main("verify", str(bad), *BLOCK, "--json")
    report = hand_json(out)
    assert rc == 1 and [(c["row"], c["column"]) for c in report["rows"] if not c["ok"]] == [(20, "W")]
    first = report["first_failure"]
    assert (first["row"], first["column"], first["label"]) == (20, "W", "∂E/∂w5")
    assert first["cached"] is None and first["wrt_cell"] == "backprop!J20"
    # Rows up to 20 are as before (only later rows' weights read W20): autograd is the right value.
    assert first["autograd"] == pytest.approx(good, rel=1e-12)
    assert first["recomputed"] != pytest.approx(good, rel=1e-3)


def test_backprop_tampered_cached_derivative_names_it(tmp_path):
    bad = tmp_path / "typed.xlsx"
    good = read_workbook(BACKPROP).sheets["backprop"].values[(30, 25)]          # Y30: ∂E/∂w7
    patch_workbook(BACKPROP, bad, {"backprop": {(30, 25): good * 1.001}})
    rc, out, _ = main("verify", str(bad), *BLOCK)
    assert rc == 1
    assert (f"first: row 30, column Y (∂E/∂w7): backprop!Y30 holds {good * 1.001:.10g}, "
            f"autograd d backprop!R30 / d backprop!L30 = {good:.10g}") in out


@pytest.mark.parametrize("flags,words", [
    (["--wrt", "B4:E53"], ["--grad backprop!S4:Z53 (50×8)", "--wrt backprop!B4:E53 (50×4)", "same shape"]),
    (["--wrt", "B4:E53,J4:M52"], ["side by side", "backprop!J4:M52 has 49"]),
    (["--of", "R4:R52"], ["--of backprop!R4:R52 (49×1) does not fit", "50×1 (one cell per row)",
                          "1×8 (one cell per column)"]),
    (["--of", "R4:S53"], ["does not fit", "50×2"]),
    (["--wrt", "B4:E53,B4:E53"], ["backprop!B4 twice"]),
    (["--of", "R4:R53,R54"], ["must be one range"]),
    (["--of", "A4:A53"], ["--of cell backprop!A4 is not a formula"]),
])
def test_block_shapes_that_do_not_fit_get_one_line(flags, words):
    args = dict(zip(BLOCK[::2], BLOCK[1::2])) | dict(zip(flags[::2], flags[1::2]))
    rc, out, err = main("verify", str(BACKPROP), *[x for kv in args.items() for x in kv])
    assert rc == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("xl2nn: error:")
    for w in words:
        assert w in err


# --------------------------------------------------------------------------- --of broadcast

def gradient_block_sheet(path: Path, wrong: dict[str, str] | None = None) -> Path:
    """A weight block W (B2:C4) and three hand-written gradient blocks of it: of one loss cell
    (A7 -> H2:I4), of a cell per W cell (K2:L4 -> M2:N4) and of a cell per column (B6:C6 -> B8:C10)."""
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "g"
    for r, (w, x) in enumerate(zip([[0.5, -1.0], [2.0, 0.25], [-0.75, 1.5]], [[1.0, 2.0], [3.0, -1.0], [0.5, 0.0]]),
                               start=2):
        for c, (wv, xv) in enumerate(zip(w, x)):
            col, xcol, hcol, kcol, mcol = "BC"[c], "EF"[c], "HI"[c], "KL"[c], "MN"[c]
            ws[f"{col}{r}"], ws[f"{xcol}{r}"] = wv, xv
            ws[f"{hcol}{r}"] = f"={col}{r}+{xcol}{r}"                   # d A7 / d W
            ws[f"{kcol}{r}"] = f"={col}{r}^3"
            ws[f"{mcol}{r}"] = f"=3*{col}{r}^2"                          # d K / d W, cell by cell
            ws[f"{col}{r + 6}"] = f"=2*{col}{r}"                         # d B6 / d B2:B4, per column
    ws["A7"] = "=SUMPRODUCT(B2:C4,B2:C4)/2+SUMPRODUCT(B2:C4,E2:F4)"
    ws["B6"], ws["C6"] = "=SUMSQ(B2:B4)", "=SUMSQ(C2:C4)"
    for cell, formula in (wrong or {}).items():
        ws[cell] = formula
    wb.save(path)
    return path


@pytest.mark.parametrize("grad,of", [("H2:I4", "A7"), ("M2:N4", "K2:L4"), ("B8:C10", "B6:C6")])
def test_of_broadcasts_over_the_block(tmp_path, grad, of):
    f = gradient_block_sheet(tmp_path / "g.xlsx")
    rc, out, err = main("verify", str(f), "--grad", grad, "--of", of, "--wrt", "B2:C4", "--json")
    assert rc == 0, out + err
    report = hand_json(out)
    assert report["ok"] and report["shape"] == [3, 2] and report["chained"] is None
    assert [c["of_cell"] for c in report["rows"][:2]] == {
        "A7": ["g!A7", "g!A7"], "K2:L4": ["g!K2", "g!L2"], "B6:C6": ["g!B6", "g!C6"]}[of]


def test_of_one_cell_a_wrong_entry_fails(tmp_path):
    f = gradient_block_sheet(tmp_path / "g.xlsx", wrong={"I3": "=C3"})          # forgot + x
    rc, out, _ = main("verify", str(f), "--grad", "H2:I4", "--of", "A7", "--wrt", "B2:C4")
    assert rc == 1
    assert "first: row 3, column I: g!I3 recomputes to 0.25, autograd d g!A7 / d g!C3 = -0.75" in out


def test_python_api_takes_areas_as_before(tmp_path):
    """check_hand_gradients(wb, grids, grad, of, wrt) with plain Areas (the one-column form)."""
    from xl2nn.cells import Area
    from xl2nn.handgrad import check_hand_gradients
    wb, graph = load(sgd_sheet(tmp_path / "sgd.xlsx"))
    grids = recalculate(wb, graph).grids
    report = check_hand_gradients(wb, grids, Area("sgd", 3, 6, 8, 6), Area("sgd", 3, 5, 8, 5),
                                  Area("sgd", 3, 3, 8, 3))
    assert report.ok and report.shape == (6, 1) and not report.block
    assert [r.autograd for r in report.rows] == pytest.approx([ref[2] for ref in reference_sgd()], rel=1e-12)
