"""inspect on any workbook: every sheet's computation named as layers, every Solver model listed,
the one xl2nn would use shown in full, long cell lists grouped into ranges."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from openpyxl import Workbook
from openpyxl.workbook.defined_name import DefinedName
from openpyxl.worksheet.formula import ArrayFormula

from xl2nn.app.common import listing
from xl2nn.cells import Area
from xl2nn.ranges import merge_areas, merge_texts, parse_area, ranges_text

from .conftest import ROOT, run_cli, solver_workbook

FORWARD = ROOT / "sample_workbooks" / "forward_pass.xlsx"
TITANIC = ROOT / "sample_workbooks" / "titanic.xlsx"


def inspect_json(path: Path, *flags: str) -> dict:
    rc, out, err = run_cli("inspect", str(path), "--json", *flags)
    assert rc == 0, err
    return json.loads(out)


def layers_of(info: dict, sheet: str) -> list[tuple[str, str, str]]:
    got, = [s for s in info["sheets"] if s["name"] == sheet]
    return [(layer["cells"], layer["layer"], layer["shape"]) for layer in got["layers"]]


# --------------------------------------------------------------------------- forward_pass.xlsx: no model

def test_forward_pass_names_every_sheets_layers_without_a_model():
    info = inspect_json(FORWARD)
    assert info["model"] is None and info["solver_models"] == [] and info["layers"] is None
    assert info["no_model"] == "no Solver model: give --params RANGE --loss CELL to compile one"
    assert [(s["name"], s["formula_cells"]) for s in info["sheets"]] == [
        ("README", 0), ("mlp", 400), ("attention", 130), ("cnn", 81)]
    mlp = layers_of(info, "mlp")
    assert mlp[0] == ("mlp!K4:M23", "matmul 20×4 · 4×3", "20×3")           # MMULT array formula
    assert ("mlp!N4:P23", "ReLU", "20×3") in mlp
    assert ("mlp!Q4:Q23", "linear 3→1 + bias", "20") in mlp                 # SUMPRODUCT per unit
    assert ("mlp!S4:S23", "sigmoid", "20") in mlp and ("mlp!T4:T23", "sigmoid", "20") in mlp
    assert ("mlp!U4:W23", "matmul 20×2 · 2×3", "20×3") in mlp
    assert ("mlp!AA4:AC23", "softmax over 3", "20×3") in mlp
    # dependency order: nothing is listed before what it reads
    names = [name for _, name, _ in mlp]
    assert names.index("matmul 20×4 · 4×3") < names.index("ReLU") < names.index("sigmoid") \
        < names.index("softmax over 3")
    attention = layers_of(info, "attention")
    assert ("attention!S3:W7", "attention scores QKᵀ/√d", "5×5") in attention
    assert ("attention!S10:W14", "softmax over 5", "5×5") in attention
    assert ("attention!S17:V21", "matmul 5×5 · 5×4", "5×4") == attention[-1]
    assert sum(name == "matmul 5×4 · 4×4" for _, name, _ in attention) == 3   # Q, K, V
    cnn = layers_of(info, "cnn")
    assert cnn == [("cnn!B13:G18", "conv 3×3", "6×6"), ("cnn!I13:N18", "ReLU", "6×6"),
                   ("cnn!P13:R15", "max-pool 2×2", "3×3")]
    pool, = [layer for s in info["sheets"] if s["name"] == "cnn" for layer in s["layers"]
             if layer["layer"] == "max-pool 2×2"]
    assert pool["families"] == 9 and pool["formula"] == "=MAX(I13:J14)"     # one formula per pooled cell


def test_forward_pass_text_output():
    rc, out, err = run_cli("inspect", str(FORWARD))
    assert rc == 0 and err == ""
    lines = out.splitlines()
    assert lines[0] == f"workbook  {FORWARD}"
    assert lines[1] == "sheets    README (0 formulas), mlp (400 formulas), attention (130 formulas), cnn (81 formulas)"
    assert "sheet     cnn: 11 formula families, in dependency order" in lines
    assert any(line.split()[:4] == ["cnn!P13:R15", "max-pool", "2×2", "→"] and line.endswith(
        "=MAX(I13:J14)  (9 formulas like it)") for line in lines)
    assert any("attention scores QKᵀ/√d" in line and "→ 5×5" in line for line in lines)
    assert lines[-1] == "model     no Solver model: give --params RANGE --loss CELL to compile one"
    assert max(len(line) for line in lines) < 130


def test_forward_pass_with_params_and_loss_labels_blocks_by_their_headers():
    rc, out, err = run_cli("inspect", str(FORWARD), "--params", "mlp!G4:I7,mlp!G11:I12", "--loss", "mlp!AA4")
    assert rc == 0, err
    assert "  param   mlp_G4_I7  mlp!G4:I7  4×3  rows [x1, x2, x3, x4] × columns [h1, h2, h3]" in out
    assert "  param   mlp_G11_I12  mlp!G11:I12  2×3  rows [g1, g2] × columns [h1, h2, h3]" in out
    assert "model     minimise mlp!AA4  (--params/--loss)" in out
    info = inspect_json(FORWARD, "--params", "mlp!G4:I7", "--loss", "mlp!AA4")
    p, = info["model"]["parameters"]
    assert p["rows"] == ["x1", "x2", "x3", "x4"] and p["columns"] == ["h1", "h2", "h3"]
    assert [layer["layer"] for layer in info["layers"]][:2] == ["matmul 20×4 · 4×3", "ReLU"]


def test_parameter_block_labelled_by_row_and_column_headers(tmp_path):
    features = ["SibSp", "Parch", "Age_N", "log_Fare", "Pclass_1", "Pclass_2", "Embark_S", "Embark_C", "Male", "Const"]
    rows = [[None] * 17 + features, [None] * 16 + ["unit1"] + [0.1] * 10, [None] * 16 + ["unit2"] + [-0.1] * 10]
    formulas = {"R6": "=SUMPRODUCT(R2:AA2,R3:AA3)^2"}                       # R..AA: the block R2:AA3
    f = solver_workbook(tmp_path / "p.xlsx", rows, formulas, "$R$2:$AA$3", "$R$6", sheet="nnet")
    rc, out, err = run_cli("inspect", str(f))
    assert rc == 0, err
    assert ("  param   nnet_R2_AA3  nnet!R2:AA3  2×10  rows [unit1, unit2] × columns [SibSp, Parch, Age_N, "
            "log_Fare, Pclass_1, Pclass_2, Embark_S, Embark_C, Male, Const]") in out.splitlines()
    p, = inspect_json(f)["model"]["parameters"]
    assert p["rows"] == ["unit1", "unit2"] and p["columns"] == features and len(p["labels"]) == 20


# --------------------------------------------------------------------------- Solver models

def three_models(path: Path) -> Path:
    """Solver models on three sheets; the workbook opens on a README without one."""
    wb = Workbook()
    wb.active.title = "README"
    wb.active["A1"] = "three models, pick one"
    for k, name in enumerate(("alpha", "beta", "gamma")):
        ws = wb.create_sheet(name)
        ws["A1"], ws["A2"] = 1.0 + k, f"=(A1-{k + 3})^2"
        for key, text in (("solver_opt", f"{name}!$A$2"), ("solver_adj", f"{name}!$A$1"),
                          ("solver_typ", "1" if name == "beta" else "2")):
            ws.defined_names[key] = DefinedName(key, attr_text=text, hidden=True)
    wb.active = 0
    wb.save(path)
    return path


def test_solver_models_on_three_sheets_none_on_the_active_one(tmp_path):
    f = three_models(tmp_path / "three.xlsx")
    rc, out, err = run_cli("inspect", str(f))
    assert rc == 0 and err == ""
    lines = out.splitlines()
    assert "solver    minimise alpha!A2 by changing alpha!A1" in lines
    assert "          maximise beta!A2 by changing beta!A1" in lines
    assert "          minimise gamma!A2 by changing gamma!A1" in lines
    picks = [line for line in lines if "pick one with --sheet NAME" in line]
    assert picks == ["model     Solver models on alpha, beta, gamma, none on the sheet the workbook opens on "
                     "('README'): pick one with --sheet NAME"]
    assert "network" not in lines and not any(line.startswith("  param") for line in lines)
    info = inspect_json(f)
    assert info["model"] is None and [(m["sheet"], m["objective"], m["sense"], m["parameters"], m["used"])
                                      for m in info["solver_models"]] == [
        ("alpha", "alpha!A2", "min", ["alpha!A1"], False), ("beta", "beta!A2", "max", ["beta!A1"], False),
        ("gamma", "gamma!A2", "min", ["gamma!A1"], False)]
    # --sheet picks one: shown in full, marked in the list
    info = inspect_json(f, "--sheet", "gamma")
    assert info["model"]["objective"] == "gamma!A2" and info["no_model"] is None
    assert [m["used"] for m in info["solver_models"]] == [False, False, True]
    assert [layer["layer"] for layer in info["layers"]] == ["squared error"]
    rc, out, _ = run_cli("inspect", str(f), "--sheet", "gamma")
    assert "          minimise gamma!A2 by changing gamma!A1  (the model below)" in out.splitlines()


def test_sheet_without_a_model_is_described_not_refused(tmp_path):
    f = three_models(tmp_path / "three.xlsx")
    info = inspect_json(f, "--sheet", "README")
    assert info["model"] is None and info["no_model"].startswith("sheet 'README' has no Solver model")
    rc, _, err = run_cli("inspect", str(f), "--sheet", "nope")
    assert rc == 2 and "no sheet named 'nope'" in err


def test_titanic_layers_unchanged():
    """The model shown in full is today's (README's tour); every sheet's layers come first."""
    info = inspect_json(TITANIC)
    assert info["model"]["objective"] == "nnet!AH1" and info["families"] == 7 and info["tensor_ops"] == 17
    assert [layer["layer"] for layer in info["layers"]] == [
        "linear 10→1 (const · param)", "ReLU", "linear 10→1 (const · param)", "ReLU", "add", "squared error", "mean"]
    assert [m["objective"] for m in info["solver_models"]] == ["linear!AA7", "nnet!AH1", "mmult!AA1"]
    assert [m["used"] for m in info["solver_models"]] == [False, True, False]
    nnet = layers_of(info, "nnet")
    assert ("nnet!AC4:AC894", "linear 10→1", "891") in nnet and ("nnet!AH1", "mean", "scalar") == nnet[-1]
    assert ("nnet!K4:K894", "one-hot", "891") in nnet
    assert ("mmult!V4:W894", "matmul 891×10 · 10×2", "891×2") in layers_of(info, "mmult")
    p, = info["model"]["parameters"]
    assert p["rows"] is None and p["columns"][:2] == ["SibSp", "Parch"]
    rc, out, _ = run_cli("inspect", str(TITANIC))
    assert "  nnet!AD4:AD894  linear 10→1 (const · param)  → 891      =SUMPRODUCT($G4:$P4,$R$5:$AA$5)" in out
    assert "  param   nnet_R4_AA5  nnet!R4:AA5  2×10  columns [SibSp, Parch, Age_N, log_Fare, Pclass_1, " \
           "Pclass_2, Embark_S, Embark_C, Male, Const]" in out


# --------------------------------------------------------------------------- long listings

def offsets(path: Path, solver: bool) -> Path:
    """400 volatile cells in each of two columns, each with its own constant (400 one-cell
    families). (OFFSET is computed, not volatile to xl2nn, and RAND read by a model is dropout:
    NOW stands in, a snapshot wherever it is.)"""
    wb = Workbook()
    ws = wb.active
    ws.title = "data"
    for r in range(2, 402):
        ws[f"A{r}"], ws[f"C{r}"] = r, 2 * r
        ws[f"B{r}"] = f"=NOW()*{r - 1}"
        ws[f"D{r}"] = f"=NOW()*{r - 1}*2"
        ws[f"E{r}"] = f"=(B{r}*$H$1+D{r}-$H$2)^2"
    ws["H1"], ws["H2"], ws["H3"] = 0.5, 1.0, "=AVERAGE(E2:E401)"
    ws["J1"] = "=BESSELJ(H1,1)"
    if solver:
        for key, text in (("solver_opt", "data!$H$3"), ("solver_adj", "data!$H$1:$H$2"), ("solver_typ", "2")):
            ws.defined_names[key] = DefinedName(key, attr_text=text, hidden=True)
    wb.save(path)
    return path


@pytest.mark.parametrize("solver", [False, True])
def test_four_hundred_offset_cells_read_as_two_ranges(tmp_path, solver):
    f = offsets(tmp_path / "off.xlsx", solver)
    rc, out, err = run_cli("inspect", str(f))
    assert rc == 0
    lines = out.splitlines()
    assert "volatile  NOW (data!B2:B401, data!D2:D401): kept as their cached values (a snapshot)" in lines
    assert "unsupported BESSELJ (data!J1): not implemented, kept as their cached values" in lines
    grouped = [line for line in lines if line.startswith("  data!B2:B401")]
    assert len(grouped) == 1 and grouped[0].endswith("=NOW()*1  (400 formulas like it)")
    assert max(len(line) for line in lines) < 150 and len(lines) < 30
    for line in err.splitlines():        # the model reads them: the snapshot warning is one short line
        assert len(line) < 300 and "NOW in data!B2:B401, data!D2:D401" in line
    assert bool(err) == solver
    info = inspect_json(f)
    assert info["volatile"] == {"NOW": ["data!B2:B401", "data!D2:D401"]}
    assert info["unsupported"] == {"BESSELJ": ["data!J1"]}


def test_eval_warning_groups_cells(tmp_path):
    f = offsets(tmp_path / "off.xlsx", solver=False)
    rc, _, err = run_cli("eval", str(f), "-o", str(tmp_path / "out.xlsx"))
    assert rc == 0
    assert "volatile NOW (data!B2:B401, data!D2:D401) (a snapshot)" in err and len(err) < 300


def test_merging_cells_into_rectangles():
    cells = [Area("s", r, c, r, c) for r in range(2, 402) for c in (2, 4)]
    assert [str(a) for a in merge_areas(cells)] == ["s!B2:B401", "s!D2:D401"]
    block = [Area("s", r, c, r, c) for r in range(1, 4) for c in range(1, 4)] + [Area("s", 4, 1, 4, 2)]
    assert [str(a) for a in merge_areas(block)] == ["s!A1:C3", "s!A4:B4"]
    # ranges as text (quoted sheet names too) are merged; anything else is kept as it is
    assert parse_area("'my sheet'!$B$2:C3") == Area("my sheet", 2, 2, 3, 3)
    assert merge_texts(["'my sheet'!A1", "'my sheet'!A2", "a TEXT format"]) == ["'my sheet'!A1:A2", "a TEXT format"]
    assert ranges_text([Area("s", r, 1, r, 1) for r in range(1, 20, 2)], most=3) == "s!A1, s!A3, s!A5 and 7 more"
    assert listing({"OFFSET": [f"data!B{r}" for r in range(2, 402)], "ERF": ["prep!G1"]}) == \
        "OFFSET (data!B2:B401), ERF (prep!G1)"


def test_single_cell_families_group_only_when_many(tmp_path):
    """Two lone formulas alike (a loss and an accuracy) keep their own lines; three or more
    (pooled cells, one formula each) share one."""
    wb = Workbook()
    ws = wb.active
    ws.title = "s"
    for r in range(1, 5):
        for c in range(1, 5):
            ws.cell(r, c, r * c)
    ws["F1"], ws["F2"] = "=AVERAGE(A1:A4)", "=AVERAGE(B1:B4)"
    ws["H1"] = ArrayFormula("H1:I2", "=MMULT(A1:B2,C1:D2)")
    wb.save(tmp_path / "s.xlsx")
    info = inspect_json(tmp_path / "s.xlsx")
    assert layers_of(info, "s") == [("s!F1", "mean", "scalar"), ("s!H1:I2", "matmul 2×2 · 2×2", "2×2"),
                                    ("s!F2", "mean", "scalar")]


def test_idioms_named_from_the_formula_and_the_areas_it_reads(tmp_path):
    """Naming needs no model: shapes come from the references' areas."""
    wb = Workbook()
    ws = wb.active
    ws.title = "s"
    for r in range(1, 6):
        for c in range(1, 6):
            ws.cell(r, c, 0.1 * r - 0.05 * c)
    for r in range(1, 6):
        ws[f"G{r}"] = f"=TANH(SUMPRODUCT($A{r}:$C{r},$A$1:$C$1))"           # linear + tanh
        ws[f"H{r}"] = f"=1/(1+EXP(-(SUMPRODUCT($A{r}:$C{r},$A$2:$C$2))))"  # linear + sigmoid (parenthesised)
        ws[f"I{r}"] = f"=EXP(A{r}-MAX($A{r}:$E{r}))/SUMPRODUCT(EXP($A{r}:$E{r}-MAX($A{r}:$E{r})))"  # stable softmax
        ws[f"J{r}"] = f"=-LN(I{r})"
    ws["L1"] = ArrayFormula("L1:N5", "=MMULT(A1:B5,A1:C2)+A3:C3")             # matmul + bias
    ws["P1"] = ArrayFormula("P1:T5", "=MMULT(A1:C5,TRANSPOSE(A1:C5))/2")     # scores over a constant d
    wb.save(tmp_path / "idioms.xlsx")
    names = {cells: name for cells, name, _ in layers_of(inspect_json(tmp_path / "idioms.xlsx"), "s")}
    assert names == {"s!G1:G5": "linear 3→1 + tanh", "s!H1:H5": "linear 3→1 + sigmoid",
                     "s!I1:I5": "softmax over 5", "s!J1:J5": "cross-entropy",
                     "s!L1:N5": "matmul 5×2 · 2×3 + bias", "s!P1:T5": "attention scores QKᵀ/√d"}
