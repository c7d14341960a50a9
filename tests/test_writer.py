"""patch_workbook writes values into a copy of an .xlsx and leaves every other byte alone."""
from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import zipfile
from pathlib import Path
from xml.etree import ElementTree as ET

import numpy as np
import pytest

openpyxl = pytest.importorskip("openpyxl")

from openpyxl.chart import LineChart as XLineChart  # noqa: E402
from openpyxl.chart import Reference  # noqa: E402
from openpyxl.comments import Comment  # noqa: E402
from openpyxl.formatting.rule import CellIsRule  # noqa: E402
from openpyxl.styles import Font, PatternFill  # noqa: E402
from openpyxl.worksheet.datavalidation import DataValidation  # noqa: E402
from openpyxl.worksheet.formula import ArrayFormula  # noqa: E402

from xl2nn.cells import CellError  # noqa: E402
from xl2nn.errors import BadInput  # noqa: E402
from xl2nn.ooxml import sheet_parts  # noqa: E402
from xl2nn.writer import LineChart, NewSheet, patch_sheet_xml, patch_workbook  # noqa: E402
from xl2nn.writer import xlsx_patch  # noqa: E402

TITANIC = Path(__file__).resolve().parent.parent.parent / "shared" / "reference" / "titanic.xlsx"
MODEL = "xl/worksheets/sheet1.xml"
OTHER = "xl/worksheets/sheet2.xml"
BOOKKEEPING = {"xl/workbook.xml", "xl/_rels/workbook.xml.rels", "[Content_Types].xml", "xl/styles.xml"}
NS = {"m": "http://schemas.openxmlformats.org/spreadsheetml/2006/main"}


# --------------------------------------------------------------------------- helpers

def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def rewrite_members(path: Path, edits: dict, drop: tuple[str, ...] = ()) -> None:
    """Test setup: replace the text of some members (name -> function of the old text)."""
    with zipfile.ZipFile(path) as zin:
        items = [(info, zin.read(info.filename)) for info in zin.infolist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zout:
        for info, data in items:
            if info.filename in drop:
                continue
            if info.filename in edits:
                data = edits[info.filename](data.decode("utf-8")).encode("utf-8")
            zout.writestr(info, data)


def sub1(pattern: str, repl: str, text: str) -> str:
    new, n = re.subn(pattern, repl, text)
    assert n == 1, f"test setup: {pattern!r} matched {n} times"
    return new


def members(path: Path) -> tuple[list[str], dict[str, bytes], dict[str, int]]:
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        return names, {n: zf.read(n) for n in names}, {i.filename: i.compress_type for i in zf.infolist()}


def cell_tag(path: Path, member: str, ref: str) -> str:
    """The raw text of cell `ref` (start tag through end) in a sheet part."""
    with zipfile.ZipFile(path) as zf:
        text = zf.read(member).decode("utf-8")
    m = re.search(r'<c r="%s"[^>]*?(?:/>|>.*?</c>)' % ref, text, re.S)
    assert m, f"{ref} not in {member}"
    return m.group(0)


def style_of(tag: str) -> str | None:
    m = re.match(r'<c\b[^>]*?\ss="(\d+)"', tag)
    return m.group(1) if m else None


def assert_untouched_except(src: Path, dst: Path, changed: set[str]) -> None:
    names_a, data_a, types_a = members(src)
    names_b, data_b, types_b = members(dst)
    assert names_b[:len(names_a)] == names_a  # same members, same order, new ones at the end
    for name in names_a:
        assert types_b[name] == types_a[name], name
        if name not in changed:
            assert data_b[name] == data_a[name], f"{name} changed"


@pytest.fixture()
def book(tmp_path: Path) -> Path:
    """Two sheets with styles, formulas (plain, shared, array), a comment, data validation,
    conditional formatting and a chart; cached values are filled in as Excel would."""
    path = tmp_path / "book.xlsx"
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "Model"
    ws["A1"] = "x"
    ws["B1"] = "y"
    for r in range(2, 7):
        ws.cell(r, 1, r * 1.5).font = Font(bold=True)
        ws.cell(r, 1).number_format = "0.00"
        ws.cell(r, 2, f"=A{r}*2").fill = PatternFill("solid", fgColor="FFFF00")
    ws["C2"] = "=SUM(B2:B6)"
    ws["E2"] = ArrayFormula("E2", "=SUM(A2:A6*2)")
    ws["F2"] = 5
    ws["F2"].number_format = "0.0%"
    ws.row_dimensions[8].height = 30  # a row with no cells
    ws["A2"].comment = Comment("a parameter", "test")
    dv = DataValidation(type="decimal", operator="between", formula1="0", formula2="100")
    ws.add_data_validation(dv)
    dv.add("A2:A6")
    ws.conditional_formatting.add("B2:B6", CellIsRule(operator="greaterThan", formula=["5"],
                                                      fill=PatternFill("solid", fgColor="FF0000")))
    other = wb.create_sheet("Other")
    other["A1"] = "=Model!C2"
    other["B1"] = "text"
    chart = XLineChart()
    chart.add_data(Reference(ws, min_col=1, min_row=1, max_row=6), titles_from_data=True)
    other.add_chart(chart, "D2")
    wb.save(path)

    def model(text: str) -> str:
        # cached values, and B3:B6 as one shared formula (master B3, children B4:B6)
        for r in range(2, 7):
            text = sub1(r'(<c r="B%d"[^>]*>)<f>A%d\*2</f><v\s*/>' % (r, r),
                        r"\g<1><f>A%d*2</f><v>%s</v>" % (r, r * 3.0) if r == 2 else
                        (r'\g<1><f t="shared" ref="B3:B6" si="0">A3*2</f><v>9</v>' if r == 3 else
                         r'\g<1><f t="shared" si="0"/><v>%s</v>' % (r * 3.0)), text)
        text = sub1(r"<f>SUM\(B2:B6\)</f><v\s*/>", "<f>SUM(B2:B6)</f><v>60</v>", text)
        text = sub1(r'(<f t="array" ref="E2">SUM\(A2:A6\*2\)</f>)<v\s*/>', r"\g<1><v>60</v>", text)
        return text

    def workbook(text: str) -> str:  # as saved by Excel: no forced recalculation
        return sub1(r' fullCalcOnLoad="1"', "", text)

    rewrite_members(path, {MODEL: model, "xl/workbook.xml": workbook})
    return path


# --------------------------------------------------------------------------- updates

def test_values_land_and_everything_else_stays(book: Path, tmp_path: Path) -> None:
    src_hash = sha256(book)
    dst = tmp_path / "out.xlsx"
    before = {ref: cell_tag(book, MODEL, ref) for ref in ("A2", "A3", "B2", "B3", "B4", "C2", "E2", "F2", "B1")}
    updates = {
        "A2": 10.25,                  # constant parameter
        "A3": 7,                      # int stays an int
        "B2": 20.5,                   # plain formula: cached value only
        "B3": 9.5,                    # shared-formula master
        "B4": CellError("#DIV/0!"),   # shared-formula child gets an error
        "C2": "total & <more>",       # formula with a string result
        "E2": True,                   # array-formula anchor with a bool result
        "F2": 0.125,
        "B1": 'why "y"?',             # constant string -> inline string
    }
    from xl2nn.cells import parse_a1
    patch_workbook(book, dst, {"Model": {parse_a1(k): v for k, v in updates.items()}})
    assert sha256(book) == src_hash

    values = openpyxl.load_workbook(dst, data_only=True)["Model"]
    assert values["A2"].value == 10.25
    assert values["A3"].value == 7
    assert values["B2"].value == 20.5
    assert values["B3"].value == 9.5
    assert values["B4"].value == "#DIV/0!"
    assert values["C2"].value == "total & <more>"
    assert values["E2"].value is True
    assert values["F2"].value == 0.125
    assert values["B1"].value == 'why "y"?'
    assert values["B5"].value == 15.0  # untouched neighbour keeps its cache

    # formulas: every formula cell of the source reads back identically
    old = openpyxl.load_workbook(book)
    new = openpyxl.load_workbook(dst)
    for name in old.sheetnames:
        for row in old[name].iter_rows():
            for cell in row:
                v = cell.value
                if isinstance(v, str) and v.startswith("=") or isinstance(v, ArrayFormula):
                    got = new[name][cell.coordinate].value
                    if isinstance(v, ArrayFormula):
                        assert (got.ref, got.text) == (v.ref, v.text)
                    else:
                        assert got == v, cell.coordinate
    assert new["Model"]["B4"].value == "=A4*2"  # openpyxl expands the shared formula child

    # raw XML: styles kept, <f> kept byte for byte, t attribute as specified
    after = {ref: cell_tag(dst, MODEL, ref) for ref in before}
    for ref in before:
        assert style_of(after[ref]) == style_of(before[ref]), ref
    assert style_of(after["A2"]) is not None and style_of(after["B3"]) is not None
    assert '<f t="shared" ref="B3:B6" si="0">A3*2</f><v>9.5</v>' in after["B3"]
    assert after["B4"].endswith('t="e"><f t="shared" si="0"/><v>#DIV/0!</v></c>')
    assert after["C2"] == '<c r="C2" t="str"><f>SUM(B2:B6)</f><v>total &amp; &lt;more&gt;</v></c>'
    assert 't="b"><f t="array" ref="E2">SUM(A2:A6*2)</f><v>1</v></c>' in after["E2"]
    # openpyxl wrote t="n"; a number is written without a t attribute, all else byte for byte
    assert after["A3"] == before["A3"].replace(' t="n"', "").replace("<v>4.5</v>", "<v>7</v>")
    assert after["A2"] == before["A2"].replace(' t="n"', "").replace("<v>3</v>", "<v>10.25</v>")
    assert re.fullmatch(r'<c r="B1" t="inlineStr"><is><t>why "y"\?</t></is></c>', after["B1"])

    assert_untouched_except(book, dst, {MODEL})
    assert members(dst)[0] == members(book)[0]


def test_numbers_are_shortest_round_trip(book: Path, tmp_path: Path) -> None:
    dst = tmp_path / "out.xlsx"
    vals = [0.1, 1 / 3, -0.0, 1e-300, 2.5e20, 123456789012345678, np.float64(0.7), np.int64(-4), np.float32(0.5)]
    patch_workbook(book, dst, {"Model": {(20 + i, 1): v for i, v in enumerate(vals)}})
    texts = [re.search(r"<v>([^<]*)</v>", cell_tag(dst, MODEL, f"A{20 + i}")).group(1) for i in range(len(vals))]
    assert texts == ["0.1", "0.3333333333333333", "-0.0", "1e-300", "2.5e+20", "123456789012345678",
                     "0.7", "-4", "0.5"]
    ws = openpyxl.load_workbook(dst, data_only=True)["Model"]
    assert ws["A21"].value == 1 / 3
    assert ws["A23"].value == 1e-300


def test_missing_cells_and_rows_are_inserted_in_order(book: Path, tmp_path: Path) -> None:
    dst = tmp_path / "out.xlsx"
    patch_workbook(book, dst, {"Model": {
        (2, 4): 4.5,        # D2 between C2 and E2
        (2, 10): "far",     # J2 after the last cell of the row
        (8, 3): 1.0,        # C8 into a row that exists but has no cells (<row .../>)
        (7, 2): 2.0,        # row 7 does not exist: goes between rows 6 and 8
        (30, 12): -1.0,     # L30: new last row, outside the dimension
        (31, 1): None,      # None for a missing cell creates nothing
    }})
    with zipfile.ZipFile(dst) as zf:
        text = zf.read(MODEL).decode("utf-8")
    rows = [int(r) for r in re.findall(r'<row r="(\d+)"', text)]
    assert rows == sorted(rows) and {7, 8, 30} <= set(rows) and 31 not in rows
    row2 = re.search(r'<row r="2".*?</row>', text).group(0)
    assert re.findall(r'<c r="([A-Z]+)2"', row2) == ["A", "B", "C", "D", "E", "F", "J"]
    assert re.search(r'<row r="8"[^>]*ht="30"[^>]*><c r="C8"><v>1.0</v></c></row>', text)
    assert re.search(r'<dimension ref="A1:L30"\s*/>', text)
    ws = openpyxl.load_workbook(dst, data_only=True)["Model"]
    assert (ws["D2"].value, ws["J2"].value, ws["C8"].value, ws["B7"].value, ws["L30"].value) == \
        (4.5, "far", 1.0, 2.0, -1.0)
    assert ws["E2"].value == 60 and ws["C2"].value == 60  # neighbours intact
    assert ws.row_dimensions[8].height == 30
    assert_untouched_except(book, dst, {MODEL})


def test_none_empties_a_constant_but_keeps_its_style(book: Path, tmp_path: Path) -> None:
    dst = tmp_path / "out.xlsx"
    style = style_of(cell_tag(book, MODEL, "A4"))
    patch_workbook(book, dst, {"Model": {(4, 1): None, (4, 2): None}})
    assert cell_tag(dst, MODEL, "A4") == f'<c r="A4" s="{style}"/>'
    assert cell_tag(dst, MODEL, "B4").endswith('<f t="shared" si="0"/></c>')  # formula stays, cache gone
    ws = openpyxl.load_workbook(dst, data_only=True)["Model"]
    assert ws["A4"].value is None and ws["A4"].font.b
    assert openpyxl.load_workbook(dst)["Model"]["B4"].value == "=A4*2"


def test_two_sheets_patched_in_one_call(book: Path, tmp_path: Path) -> None:
    dst = tmp_path / "out.xlsx"
    patch_workbook(book, dst, {"Model": {(2, 1): 1.5}, "Other": {(1, 1): 42.0, (1, 2): "new"}})
    wb = openpyxl.load_workbook(dst, data_only=True)
    assert (wb["Model"]["A2"].value, wb["Other"]["A1"].value, wb["Other"]["B1"].value) == (1.5, 42, "new")
    assert_untouched_except(book, dst, {MODEL, OTHER})
    # the untouched chart on "Other" is still there
    names = members(dst)[0]
    assert "xl/charts/chart1.xml" in names and "xl/drawings/drawing1.xml" in names


def test_recalc_on_open_sets_the_flag_on_existing_calcpr(book: Path, tmp_path: Path) -> None:
    dst = tmp_path / "out.xlsx"
    patch_workbook(book, dst, {"Model": {(2, 1): 1.0}}, recalc_on_open=True)
    with zipfile.ZipFile(book) as a, zipfile.ZipFile(dst) as b:
        old = a.read("xl/workbook.xml").decode()
        new = b.read("xl/workbook.xml").decode()
    assert '<calcPr calcId="124519" fullCalcOnLoad="1" />' in new
    assert new.replace(' fullCalcOnLoad="1"', "") == old  # nothing else in workbook.xml changed
    assert_untouched_except(book, dst, {MODEL, "xl/workbook.xml"})


def test_recalc_on_open_creates_calcpr_in_schema_order(book: Path, tmp_path: Path) -> None:
    ext = '<extLst><ext uri="{00000000-0000-0000-0000-000000000001}"/></extLst>'
    rewrite_members(book, {"xl/workbook.xml": lambda t: sub1(r'<calcPr[^>]*/>', ext, t)})
    dst = tmp_path / "out.xlsx"
    patch_workbook(book, dst, {}, recalc_on_open=True)
    with zipfile.ZipFile(dst) as zf:
        text = zf.read("xl/workbook.xml").decode()
    assert text.index("<definedNames") < text.index('<calcPr fullCalcOnLoad="1"/>') < text.index("<extLst>")
    ET.fromstring(text)
    openpyxl.load_workbook(dst)
    assert_untouched_except(book, dst, {"xl/workbook.xml"})


# --------------------------------------------------------------------------- errors, atomicity

def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") or p.suffix == ".tmp")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -np.inf])
def test_non_finite_value_is_refused_and_leaves_nothing(book: Path, tmp_path: Path, bad) -> None:
    src_hash = sha256(book)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    dst = out_dir / "out.xlsx"
    with pytest.raises(ValueError, match=r"Model!B3"):
        patch_workbook(book, dst, {"Model": {(2, 1): 1.0, (3, 2): bad}})
    assert not dst.exists()
    assert list(out_dir.iterdir()) == []
    assert sha256(book) == src_hash


def test_failure_while_writing_removes_the_temp_file(book: Path, tmp_path: Path, monkeypatch) -> None:
    src_hash = sha256(book)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    dst = out_dir / "out.xlsx"
    real = xlsx_patch._write_package

    def crash(zf, fh, replaced, added, removed):
        real(zf, fh, replaced, added, removed)
        assert any(out_dir.iterdir())  # the temp file exists at this point
        raise OSError("disk full")

    monkeypatch.setattr(xlsx_patch, "_write_package", crash)
    with pytest.raises(OSError, match="disk full"):
        patch_workbook(book, dst, {"Model": {(2, 1): 1.0}})
    assert list(out_dir.iterdir()) == []
    assert sha256(book) == src_hash


def test_existing_dst_is_replaced_only_on_success(book: Path, tmp_path: Path) -> None:
    dst = tmp_path / "out.xlsx"
    dst.write_bytes(b"old")
    with pytest.raises(ValueError):
        patch_workbook(book, dst, {"Model": {(2, 1): float("nan")}})
    assert dst.read_bytes() == b"old"
    patch_workbook(book, dst, {"Model": {(2, 1): 3.25}})
    assert openpyxl.load_workbook(dst, data_only=True)["Model"]["A2"].value == 3.25
    assert _leftovers(tmp_path) == []


def test_dst_equal_to_src_is_refused(book: Path) -> None:
    src_hash = sha256(book)
    with pytest.raises(ValueError, match="source"):
        patch_workbook(book, book, {"Model": {(2, 1): 1.0}})
    with pytest.raises(ValueError, match="source"):
        patch_workbook(book, book.parent / "." / book.name, {})
    assert sha256(book) == src_hash


def test_unknown_sheet_is_bad_input_naming_file_and_sheet(book: Path, tmp_path: Path) -> None:
    dst = tmp_path / "out.xlsx"
    with pytest.raises(BadInput) as err:
        patch_workbook(book, dst, {"Nope": {(1, 1): 1.0}})
    msg = str(err.value)
    assert "book.xlsx" in msg and "'Nope'" in msg and "\n" not in msg
    assert not dst.exists() and _leftovers(tmp_path) == []


def test_bad_positions_and_values_are_refused(book: Path, tmp_path: Path) -> None:
    dst = tmp_path / "out.xlsx"
    with pytest.raises(ValueError):
        patch_workbook(book, dst, {"Model": {(0, 1): 1.0}})
    with pytest.raises(ValueError):
        patch_workbook(book, dst, {"Model": {(1, 16385): 1.0}})
    with pytest.raises(ValueError, match="error value"):
        patch_workbook(book, dst, {"Model": {(1, 1): CellError("#BOGUS")}})
    with pytest.raises(ValueError, match="type"):
        patch_workbook(book, dst, {"Model": {(1, 1): [1]}})
    assert not dst.exists()


# --------------------------------------------------------------------------- sheet XML corner cases

def test_prefixed_namespace_implicit_refs_and_extlst() -> None:
    xml = (b'<?xml version="1.0"?>\n<x:worksheet xmlns:x="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
           b'<x:dimension ref="A1:C2"/><x:sheetData>'
           b'<x:row><x:c><x:v>1</x:v></x:c><x:c t="s"><x:v>0</x:v></x:c></x:row>'       # row 1, A1 B1 implicit
           b'<x:row r="2"><x:c r="A2" s="3"><x:f>A1+1</x:f><x:v>2</x:v>'
           b'<x:extLst><x:ext uri="u"/></x:extLst></x:c></x:row>'
           b'</x:sheetData></x:worksheet>')
    out = patch_sheet_xml(xml, {(1, 2): "hi", (1, 3): 3.5, (2, 1): 9.0, (2, 2): False})
    root = ET.fromstring(out)
    assert root.tag.endswith("}worksheet")
    assert b"<x:c t=\"inlineStr\"><x:is><x:t>hi</x:t></x:is></x:c>" in out
    assert b'<x:c r="C1"><x:v>3.5</x:v></x:c></x:row>' in out
    assert b'<x:c r="A2" s="3"><x:f>A1+1</x:f><x:v>9.0</x:v><x:extLst><x:ext uri="u"/></x:extLst></x:c>' in out
    assert b'<x:c r="B2" t="b"><x:v>0</x:v></x:c>' in out
    assert out.count(b"<x:c") == 5
    assert out.startswith(b'<?xml version="1.0"?>\n<x:worksheet')


def test_empty_sheetdata_and_whitespace() -> None:
    xml = (b'<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
           b'<dimension ref="A1"/><sheetData/></worksheet>')
    out = patch_sheet_xml(xml, {(3, 2): "  padded\tline\nnext ", (1, 1): None, (3, 1): "\x01_x0041_"})
    root = ET.fromstring(out)
    cells = root.findall(".//m:c", NS)
    assert [c.get("r") for c in cells] == ["A3", "B3"]
    assert cells[1].find("m:is/m:t", NS).text == "  padded\tline\nnext "
    assert b'xml:space="preserve"' in out
    assert cells[0].find("m:is/m:t", NS).text == "_x0001__x005F_x0041_"  # Excel's escaping
    assert b'<dimension ref="A1:B3"/>' in out
    # nothing to do: the same bytes come back
    assert patch_sheet_xml(xml, {(5, 5): None}) == xml


def test_self_closing_row_gets_cells() -> None:
    xml = (b'<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>'
           b'<row r="2" ht="30" customHeight="1"/><row r="3" spans="2:2"><c r="B3"/></row>'
           b'<rowBreaksNot/></sheetData></worksheet>')
    out = patch_sheet_xml(xml, {(2, 2): 1.5, (3, 2): "x", (3, 1): 4})
    assert (b'<row r="2" ht="30" customHeight="1"><c r="B2"><v>1.5</v></c></row>'
            b'<row r="3" spans="1:2"><c r="A3"><v>4</v></c><c r="B3" t="inlineStr"><is><t>x</t></is></c></row>') in out
    ET.fromstring(out)


def test_t_attribute_is_replaced_not_duplicated() -> None:
    xml = (b'<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>'
           b'<row r="1" spans="1:2"><c r="A1" s="1" t="s" cm="1"><v>4</v></c>'
           b'<c r="B1" t="str"><f>"a"</f><v>a</v></c></row></sheetData></worksheet>')
    out = patch_sheet_xml(xml, {(1, 1): 2.0, (1, 2): 1.5, (1, 5): 1})
    assert b'<c r="A1" s="1" cm="1"><v>2.0</v></c>' in out
    assert b'<c r="B1"><f>"a"</f><v>1.5</v></c>' in out
    assert b'<row r="1" spans="1:5">' in out  # spans widened for the inserted E1


# --------------------------------------------------------------------------- new sheets

def _trace(n: int = 100) -> np.ndarray:
    steps = np.arange(1, n + 1, dtype=np.float64)
    loss = np.exp(-steps / 30.0) + 0.01 * np.sin(steps)
    w = np.cos(steps / 10.0)
    g = -np.sin(steps / 10.0) / 10.0
    u = -0.1 * g
    return np.column_stack([steps, loss, w, g, u])


def test_new_sheet_with_chart(book: Path, tmp_path: Path) -> None:
    dst = tmp_path / "out.xlsx"
    rows = _trace(100)
    rows[40, 3] = np.inf  # a diverged value is written as #NUM!, not refused
    rows[99, 4] = np.nan  # no value (e.g. the last step's update) is an empty cell
    header = ["step", "loss", "w", "w_grad", "w_update"]
    chart = LineChart(title="Training loss", x_title="step", y_title="loss", x_col=0, y_cols=[1, 2])
    patch_workbook(book, dst, {"Model": {(2, 1): 2.0}},
                   new_sheets=[NewSheet("sgd_steps", header, rows, chart=chart)], recalc_on_open=True)

    wb = openpyxl.load_workbook(dst)
    assert wb.sheetnames == ["Model", "Other", "sgd_steps"]
    ws = wb["sgd_steps"]
    assert [c.value for c in ws[1]] == header
    assert all(c.font.b for c in ws[1])
    got = np.array([[c.value for c in row] for row in ws.iter_rows(min_row=2)], dtype=object)
    assert got.shape == (100, 5)
    assert got[40, 3] == "#NUM!"
    assert got[99, 4] is None
    assert ws["E101"].value is None   # an empty cell, still styled (format checked below)
    mask = np.ones(rows.shape, bool)
    mask[40, 3] = mask[99, 4] = False
    assert np.array_equal(got[mask].astype(float), rows[mask])  # exact: shortest round-trip text
    assert ws["B2"].number_format == "0.000000" and ws["E101"].number_format == "0.000000"
    assert ws["A2"].number_format == "0" and ws["A2"].value == 1
    assert ws.freeze_panes == "A2"
    assert (ws.column_dimensions["A"].width, ws.column_dimensions["A"].max) == (14.0, 5)
    assert wb["Model"]["A2"].value == 2.0

    names, data, _ = members(dst)
    # the fixture already has drawing1/chart1 (openpyxl's chart on "Other"): fresh numbers are used
    new_parts = [n for n in names if n not in members(book)[0]]
    assert set(new_parts) == {"xl/worksheets/sheet3.xml", "xl/worksheets/_rels/sheet3.xml.rels",
                              "xl/drawings/drawing2.xml", "xl/drawings/_rels/drawing2.xml.rels",
                              "xl/charts/chart2.xml"}
    chart_root = ET.fromstring(data["xl/charts/chart2.xml"])
    c = {"c": "http://schemas.openxmlformats.org/drawingml/2006/chart"}
    series = chart_root.findall(".//c:lineChart/c:ser", c)
    assert len(series) == 2
    assert [s.find("c:val/c:numRef/c:f", c).text for s in series] == \
        ["'sgd_steps'!$B$2:$B$101", "'sgd_steps'!$C$2:$C$101"]
    assert series[0].find("c:cat/c:numRef/c:f", c).text == "'sgd_steps'!$A$2:$A$101"
    assert series[0].find("c:tx/c:strRef/c:strCache/c:pt/c:v", c).text == "loss"
    cache = [float(v.text) for v in series[0].findall("c:val/c:numRef/c:numCache/c:pt/c:v", c)]
    assert cache == rows[:, 1].tolist()
    drawing = data["xl/drawings/drawing2.xml"].decode()
    assert "<xdr:col>6</xdr:col>" in drawing  # two columns right of the 5-column table (G)
    assert b"../charts/chart2.xml" in data["xl/drawings/_rels/drawing2.xml.rels"]
    assert b'<drawing r:id="rId1"/>' in data["xl/worksheets/sheet3.xml"]
    ct = data["[Content_Types].xml"].decode()
    for part in ("/xl/worksheets/sheet3.xml", "/xl/drawings/drawing2.xml", "/xl/charts/chart2.xml"):
        assert f'PartName="{part}"' in ct
    wbxml = data["xl/workbook.xml"].decode()
    assert re.search(r'<sheet name="sgd_steps" sheetId="3" r:id="rId\d+"/>', wbxml)
    assert 'fullCalcOnLoad="1"' in wbxml
    # openpyxl finds the chart through the sheet's drawing
    assert len(wb["sgd_steps"]._charts) == 1
    assert len(wb["Model"]._charts) == 0 and len(wb["Other"]._charts) == 1
    assert_untouched_except(book, dst, BOOKKEEPING | {MODEL})


def test_new_sheet_styles_are_appended_with_counts(book: Path, tmp_path: Path) -> None:
    dst = tmp_path / "out.xlsx"
    patch_workbook(book, dst, {}, new_sheets=[NewSheet("t1", ["a", "b"], np.array([[0.5, 1.5]]),
                                                       number_format="0.0000E+00")])
    with zipfile.ZipFile(book) as a, zipfile.ZipFile(dst) as b:
        old = a.read("xl/styles.xml").decode()
        new = b.read("xl/styles.xml").decode()

    def count(text: str, block: str, child: str) -> tuple[int, int]:
        m = re.search(r'<%s count="(\d+)"[^>]*>(.*?)</%s>' % (block, block), text, re.S)
        return int(m.group(1)), len(re.findall(r"<%s\b" % child, m.group(2)))

    n_old, k_old = count(old, "cellXfs", "xf")
    n_new, k_new = count(new, "cellXfs", "xf")
    assert n_old == k_old and n_new == k_new
    assert n_new == n_old + 2  # data format + bold header (first column not integral)
    f_old, _ = count(old, "fonts", "font")
    f_new, k = count(new, "fonts", "font")
    assert f_new == f_old + 1 == k
    assert re.search(r'<numFmt numFmtId="(\d+)" formatCode="0.0000E\+00"/>', new)
    fmt_id = int(re.search(r'<numFmt numFmtId="(\d+)" formatCode="0.0000E\+00"/>', new).group(1))
    assert fmt_id >= 164
    assert new.startswith(old[:old.index("<cellXfs")].split("<numFmts")[0])
    ws = openpyxl.load_workbook(dst)["t1"]
    assert ws["A2"].number_format == "0.0000E+00" and ws["B2"].value == 1.5


def test_existing_custom_number_format_is_reused(book: Path, tmp_path: Path) -> None:
    dst = tmp_path / "out.xlsx"
    with zipfile.ZipFile(book) as zf:
        old = zf.read("xl/styles.xml").decode()
    existing = re.search(r'<numFmt numFmtId="(\d+)" formatCode="0.0%"\s*/>', old)
    assert existing, "test setup: the fixture has a custom 0.0% format"
    patch_workbook(book, dst, {}, new_sheets=[NewSheet("pct", ["a"], np.array([[0.5]]), number_format="0.0%")])
    with zipfile.ZipFile(dst) as zf:
        new = zf.read("xl/styles.xml").decode()
    assert new.count("<numFmt ") == old.count("<numFmt ")
    assert f'<xf numFmtId="{existing.group(1)}" fontId="0"' in new
    assert openpyxl.load_workbook(dst)["pct"]["A2"].number_format == "0.0%"


def test_two_new_sheets_and_name_clash(book: Path, tmp_path: Path) -> None:
    dst = tmp_path / "out.xlsx"
    a = NewSheet("one", ["x"], np.array([[1.0], [2.0]]), freeze_header=False)
    b = NewSheet("it's two", ["x", "y"], _trace(5)[:, :2],
                 chart=LineChart("t", "x", "y", 0, [1], anchor="D10"))
    patch_workbook(book, dst, {}, new_sheets=[a, b])
    wb = openpyxl.load_workbook(dst)
    assert wb.sheetnames[-2:] == ["one", "it's two"]
    assert wb["one"].freeze_panes is None
    with zipfile.ZipFile(dst) as zf:
        chart = zf.read("xl/charts/chart2.xml").decode()
        drawing = zf.read("xl/drawings/drawing2.xml").decode()
    assert "<c:f>'it''s two'!$B$2:$B$6</c:f>" in chart
    assert "<xdr:from><xdr:col>3</xdr:col><xdr:colOff>0</xdr:colOff><xdr:row>9</xdr:row>" in drawing

    for clash in ("Other", "model"):
        with pytest.raises(BadInput, match="already has a sheet"):
            patch_workbook(book, tmp_path / "clash.xlsx", {}, new_sheets=[NewSheet(clash, ["x"], np.zeros((1, 1)))])
    with pytest.raises(ValueError):
        patch_workbook(book, tmp_path / "bad.xlsx", {}, new_sheets=[NewSheet("a/b", ["x"], np.zeros((1, 1)))])
    with pytest.raises(ValueError, match="shape"):
        patch_workbook(book, tmp_path / "bad.xlsx", {}, new_sheets=[NewSheet("ok", ["x", "y"], np.zeros((3, 1)))])
    assert not (tmp_path / "clash.xlsx").exists() and not (tmp_path / "bad.xlsx").exists()


def test_new_sheet_without_rows_has_no_chart(book: Path, tmp_path: Path) -> None:
    dst = tmp_path / "out.xlsx"
    sheet = NewSheet("empty", ["step", "loss"], np.zeros((0, 2)), chart=LineChart("t", "x", "y", 0, [1]))
    patch_workbook(book, dst, {}, new_sheets=[sheet])
    names = members(dst)[0]
    assert "xl/worksheets/sheet3.xml" in names and "xl/charts/chart2.xml" not in names
    ws = openpyxl.load_workbook(dst)["empty"]
    assert [c.value for c in ws[1]] == ["step", "loss"] and ws.max_row == 1


def test_new_sheet_in_a_workbook_without_styles_part(book: Path, tmp_path: Path) -> None:
    rewrite_members(book, {
        "xl/_rels/workbook.xml.rels": lambda t: sub1(r'<Relationship [^>]*/styles"[^>]*/>', "", t),
        "[Content_Types].xml": lambda t: sub1(r'<Override PartName="/xl/styles.xml"[^>]*/>', "", t),
        # no styles part: no style references either
        MODEL: lambda t: re.sub(r' s="\d+"|<conditionalFormatting.*?</conditionalFormatting>', "", t),
    }, drop=("xl/styles.xml",))
    dst = tmp_path / "out.xlsx"
    patch_workbook(book, dst, {}, new_sheets=[NewSheet("t", ["a"], np.array([[0.25]]))])
    names, data, _ = members(dst)
    assert "xl/styles.xml" in names
    assert b'/styles" Target="styles.xml"' in data["xl/_rels/workbook.xml.rels"]
    assert b'PartName="/xl/styles.xml"' in data["[Content_Types].xml"]
    ws = openpyxl.load_workbook(dst)["t"]
    assert ws["A2"].value == 0.25 and ws["A2"].number_format == "0.000000" and ws["A1"].font.b


# --------------------------------------------------------------------------- LibreOffice

def _soffice(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("soffice")
    profile = (tmp_path / "lo-profile").as_uri()
    return subprocess.run([exe, f"-env:UserInstallation={profile}", "--headless", *args],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)


@pytest.mark.skipif(shutil.which("soffice") is None, reason="soffice (LibreOffice) is not on PATH")
def test_libreoffice_opens_the_result(book: Path, tmp_path: Path) -> None:
    dst = tmp_path / "out.xlsx"
    chart = LineChart(title="Training loss", x_title="step", y_title="loss", x_col=0, y_cols=[1])
    patch_workbook(book, dst, {"Model": {(2, 1): 10.0, (9, 1): "note"}},
                   new_sheets=[NewSheet("sgd_steps", ["step", "loss", "w", "g", "u"], _trace(50), chart=chart)],
                   recalc_on_open=True)
    conv = tmp_path / "conv"
    res = _soffice(["--convert-to", "csv", "--outdir", str(conv), str(dst)], tmp_path)
    assert res.returncode == 0, res.stderr
    csv = (conv / "out.csv").read_text()
    lines = csv.splitlines()
    # LibreOffice reads the new constant and the cached formula values (whether it also
    # recalculates on load depends on its settings, which tests/test_libreoffice.py covers)
    first = lines[1].split(",")
    assert float(first[0]) == 10.0 and float(first[2]) in (60.0, 20 + 9 + 12 + 15 + 18)
    assert lines[8].startswith("note")
    res = _soffice(["--convert-to", "xlsx", "--outdir", str(conv / "x"), str(dst)], tmp_path)
    assert res.returncode == 0, res.stderr
    again = openpyxl.load_workbook(conv / "x" / "out.xlsx", data_only=True)
    assert again.sheetnames == ["Model", "Other", "sgd_steps"]
    assert again["sgd_steps"]["B2"].value == pytest.approx(_trace(50)[0, 1])
    assert len(again["sgd_steps"]._charts) == 1


# --------------------------------------------------------------------------- the reference workbook

@pytest.mark.skipif(not TITANIC.exists(), reason="../shared/reference/titanic.xlsx not present")
def test_titanic_params(tmp_path: Path) -> None:
    src_hash = sha256(TITANIC)
    dst = tmp_path / "titanic_out.xlsx"
    rng = np.random.default_rng(0)
    params = {(r, c): float(rng.normal()) for r in (4, 5) for c in range(18, 28)}  # R4:AA5
    updates = dict(params)
    updates[(1, 34)] = 0.123456789  # AH1: =AVERAGE(AH4:AH715), cached value only
    with zipfile.ZipFile(TITANIC) as zf:
        sheet_path = next(p.path for p in sheet_parts(zf, "t") if p.name == "nnet")
    before = {ref: cell_tag(TITANIC, sheet_path, ref) for ref in ("R4", "AA5", "AH1")}
    patch_workbook(TITANIC, dst, {"nnet": updates})
    assert sha256(TITANIC) == src_hash
    assert_untouched_except(TITANIC, dst, {sheet_path})
    assert members(dst)[0] == members(TITANIC)[0]
    ws = openpyxl.load_workbook(dst, data_only=True)["nnet"]
    for (r, c), v in params.items():
        assert ws.cell(r, c).value == v
    assert ws["AH1"].value == 0.123456789
    formulas = openpyxl.load_workbook(dst, read_only=True)["nnet"]
    assert formulas["AH1"].value == "=AVERAGE(AH4:AH715)"
    for ref, tag in before.items():
        new = cell_tag(dst, sheet_path, ref)
        assert style_of(new) == style_of(tag)
    assert cell_tag(dst, sheet_path, "AH1").startswith('<c r="AH1" s="15"><f>AVERAGE(AH4:AH715)</f><v>')
