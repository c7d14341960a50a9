"""Parameter cells holding formulas (`=RAND()*2-1` copied into the weights, `=G2`): their current
values are the starting weights, the output holds numbers there (as Excel's Solver writes a
solution), one warning line says so; the numbers replace the formulas byte-safely."""
from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import pytest

from xl2nn.cells import OverFormula
from xl2nn.errors import BadInput
from xl2nn.reader import read_workbook
from xl2nn.writer import patch_sheet_xml

from .conftest import run_cli
from .libreoffice import find_soffice, recalculate, with_libreoffice_values

needs_soffice = pytest.mark.skipif(find_soffice() is None, reason="LibreOffice (soffice) is not installed")
X = [0.5, 1.0, 1.5, 2.0, 2.5, 3.0]
Y = [1.1, 2.0, 3.2, 3.9, 5.1, 6.0]


@pytest.fixture(scope="module")
def initialised(tmp_path_factory) -> Path:
    """y ≈ w·x + b with w = G2 (a reference) and b = RAND()*2-1, Solver changing E2:F2; its
    cached values are LibreOffice's, so b's RAND has a value (the snapshot the start uses)."""
    if find_soffice() is None:
        pytest.skip("LibreOffice (soffice) is not installed: it computes the cached values")
    from openpyxl import Workbook
    from openpyxl.workbook.defined_name import DefinedName
    wb = Workbook()
    ws = wb.active
    ws.title = "fit"
    ws["E1"], ws["F1"], ws["G1"] = "w", "b", "w0"
    ws["E2"], ws["F2"], ws["G2"] = "=G2", "=RAND()*2-1", 0.5
    for i, (x, y) in enumerate(zip(X, Y), start=2):
        ws[f"A{i}"], ws[f"B{i}"] = x, y
        ws[f"C{i}"] = f"=($E$2*A{i}+$F$2-B{i})^2"
    ws["H1"] = f"=AVERAGE(C2:C{len(X) + 1})"
    for name, text in (("solver_opt", "fit!$H$1"), ("solver_adj", "fit!$E$2:$F$2"), ("solver_typ", "2")):
        ws.defined_names[name] = DefinedName(name, attr_text=text, hidden=True)
    path = tmp_path_factory.mktemp("init") / "init.xlsx"
    wb.save(path)
    return with_libreoffice_values(path)


def test_verify_starts_from_the_formulas_values_and_says_so(initialised):
    rc, out, err = run_cli("verify", str(initialised), "--json")
    assert rc == 0, err
    model, = json.loads(out)["models"]
    assert model["gradients"]["ok"] and [g["cell"] for g in model["gradients"]["checks"][:2]] == ["fit!E2", "fit!F2"]
    warning, = [line for line in err.splitlines() if "parameter cell" in line]
    assert warning.startswith("xl2nn: warning: 2 parameter cell(s) hold formulas (fit!E2:F2, e.g. =G2): their current "
                              "values are the starting weights")


@needs_soffice
def test_train_writes_numbers_over_the_formulas(initialised, tmp_path):
    out = tmp_path / "trained.xlsx"
    start = read_workbook(initialised).sheets["fit"].values
    rc, stdout, err = run_cli("train", str(initialised), "--steps", "200", "--lr", "0.05", "-o", str(out), "--json")
    assert rc == 0, err
    info = json.loads(stdout)
    # the start is the formulas' values: w = G2 = 0.5, b = the RAND snapshot
    w0, b0 = start[(2, 5)], start[(2, 6)]
    assert w0 == 0.5 and -1 <= b0 <= 1
    assert info["start_loss"] == pytest.approx(sum((w0 * x + b0 - y) ** 2 for x, y in zip(X, Y)) / len(X), rel=1e-12)
    assert info["final_loss"] < info["start_loss"]
    from openpyxl import load_workbook
    ws = load_workbook(out)["fit"]
    assert isinstance(ws["E2"].value, float) and isinstance(ws["F2"].value, float)      # numbers, no formula
    assert ws["G2"].value == 0.5 and ws["C2"].value == "=($E$2*A2+$F$2-B2)^2"           # the rest as it was
    # LibreOffice, recalculating the output, gets the loss train reported
    lo = read_workbook(recalculate(out, tmp_path / "lo.xlsx")).sheets["fit"].values[(1, 8)]
    assert lo == pytest.approx(info["final_loss"], rel=1e-9)


def test_import_weights_writes_numbers_over_the_formulas(initialised, tmp_path):
    import torch
    torch.save({"fit_E2_F2": torch.tensor([[2.0, 0.0]], dtype=torch.float64)}, tmp_path / "w.pt")
    out = tmp_path / "imported.xlsx"
    rc, stdout, err = run_cli("import-weights", str(initialised), str(tmp_path / "w.pt"), "-o", str(out), "--json")
    assert rc == 0, err
    assert json.loads(stdout)["objective_value"] == pytest.approx(sum((2 * x - y) ** 2 for x, y in zip(X, Y)) / 6,
                                                                  rel=1e-12)
    sheet = read_workbook(out).sheets["fit"]
    assert sheet.values[(2, 5)] == 2.0 and sheet.values[(2, 6)] == 0.0 and (2, 5) not in sheet.formulas


SHARED = (b'<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>'
          b'<row r="1"><c r="A1" cm="1"><f t="shared" ref="A1:A3" si="0">RAND()*2-1</f><v>0.1</v></c></row>'
          b'<row r="2"><c r="A2"><f t="shared" si="0"/><v>0.2</v></c></row>'
          b'<row r="3"><c r="A3"><f t="shared" si="0"/><v>0.3</v></c><c r="B3"><f>A3*2</f><v>0.6</v></c></row>'
          b'</sheetData></worksheet>')


def test_a_shared_formula_is_replaced_whole_or_not_at_all():
    """Excel fills a block with one shared formula written in its first cell: numbers may
    replace it only together with every cell it is written for."""
    out = patch_sheet_xml(SHARED, {(1, 1): OverFormula(1.5), (2, 1): OverFormula(-2.0), (3, 1): OverFormula(0.25)})
    cells = dict(re.findall(rb'<c r="(A\d)"[^>]*>(.*?)</c>', out))
    assert cells == {b"A1": b"<v>1.5</v>", b"A2": b"<v>-2.0</v>", b"A3": b"<v>0.25</v>"}
    assert b'cm="1"' not in out and b"<f>A3*2</f>" in out                  # B3's formula untouched
    # a child alone: fine; the first cell alone would orphan its children
    assert b'<c r="A2"><v>' in patch_sheet_xml(SHARED, {(2, 1): OverFormula(5.0)})
    with pytest.raises(BadInput, match="A1 holds the formula written for A1:A3"):
        patch_sheet_xml(SHARED, {(1, 1): OverFormula(5.0)})
    # a plain float keeps the formula and changes only the cached value, as before
    assert b'<f t="shared" ref="A1:A3" si="0">RAND()*2-1</f><v>5.0</v>' in \
        patch_sheet_xml(SHARED, {(1, 1): 5.0})


def _with_calc_chain(src: Path, dst: Path) -> Path:
    """`src` with an Excel-style xl/calcChain.xml (the part, its relationship, its content type)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename == "[Content_Types].xml":
                data = data.replace(b"</Types>", b'<Override PartName="/xl/calcChain.xml" ContentType="application/'
                                    b'vnd.openxmlformats-officedocument.spreadsheetml.calcChain+xml"/></Types>')
            if info.filename == "xl/_rels/workbook.xml.rels":
                data = data.replace(b"</Relationships>", b'<Relationship Id="rId99" Type="http://schemas.openxmlformats'
                                    b'.org/officeDocument/2006/relationships/calcChain" Target="calcChain.xml"/>'
                                    b"</Relationships>")
            zout.writestr(info, data)
        zout.writestr("xl/calcChain.xml", b'<calcChain xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/'
                      b'main"><c r="E2" i="1"/><c r="F2"/><c r="H1"/></calcChain>')
    return dst


def _has_calc_chain(path: Path) -> bool:
    with zipfile.ZipFile(path) as z:
        found = ["xl/calcChain.xml" in z.namelist(), b"calcChain" in z.read("[Content_Types].xml"),
                 b"calcChain" in z.read("xl/_rels/workbook.xml.rels")]
    assert len(set(found)) == 1, found          # the part and both references go together
    return found[0]


def test_the_calculation_chain_goes_when_formulas_are_replaced(initialised, tmp_path):
    """Excel's calcChain.xml lists formula cells; one naming a cell that no longer holds a
    formula makes Excel report the file damaged. It is dropped (Excel rebuilds it), and only
    then."""
    chained = _with_calc_chain(initialised, tmp_path / "chained.xlsx")
    out = tmp_path / "out.xlsx"
    rc, _, err = run_cli("train", str(chained), "--steps", "5", "-o", str(out))
    assert rc == 0, err
    assert _has_calc_chain(chained) and not _has_calc_chain(out)
    # the output's parameters are plain numbers: training it again keeps a chain it has
    again = tmp_path / "again.xlsx"
    rc, _, err = run_cli("train", str(_with_calc_chain(out, tmp_path / "out_chained.xlsx")), "--steps", "5",
                         "-o", str(again))
    assert rc == 0, err
    assert _has_calc_chain(again)
