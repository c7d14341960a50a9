"""Every writer's file reads as Excel's does: the same model saved by openpyxl (normal and
write_only), XlsxWriter and LibreOffice, and each plain spelling those writers use, read by
the NumPy scanner (no fallback to the XML parser), equal to the XML parser's reading, with
the per-cell formula texts of a copied column stored as one formula, and written back by
splicing values in.
"""
from __future__ import annotations

import math
import re
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from xl2nn.api import recalculate_workbook
from xl2nn.cells import CellError
from xl2nn.formula.shape import shape_key
from xl2nn.ir.families import build_families
from xl2nn.reader import read_workbook
from xl2nn.reader.copies import copied_runs, pieces
from xl2nn.writer import CellColumns, patch_workbook
from xl2nn.writer.columns import splice_numbers

from .conftest import ROOT, run_cli
from .libreoffice import find_soffice
from .test_fast_reader import _rewrite_sheet, _slow, _snapshot

sys.path.insert(0, str(ROOT / "benchmarks"))
import big_workbook  # noqa: E402

ROWS = 300
PART = "xl/worksheets/sheet1.xml"
WRITERS = ["openpyxl", "openpyxl-write-only", "xlsxwriter", "libreoffice"]


def _flavour(tmp_path: Path, flavour: str, rows: int = ROWS) -> Path:
    if flavour == "libreoffice" and find_soffice() is None:
        pytest.skip("LibreOffice (soffice) is not installed")
    return big_workbook.write(tmp_path / f"{flavour}.xlsx", rows, flavour=flavour)


def _families(path: Path) -> list:
    fams, problems = build_families(read_workbook(path))
    assert not problems
    return sorted((f.sheet, f.rows.tolist(), f.cols.tolist(), f.ast) for f in fams)


def _read_fast(path: Path, monkeypatch) -> dict:
    """The fast reading, checked to be the fast path's and equal to the XML parser's."""
    wb = read_workbook(path)
    assert wb.sheets["nnet"].spans is not None, "the scanner fell back to the XML parser"
    fast = _snapshot(path)
    with monkeypatch.context() as m:
        _slow(m)
        assert fast == _snapshot(path)
    return fast


@pytest.mark.parametrize("flavour", WRITERS)
def test_every_writer_reads_fast_and_as_excel_computes(flavour, tmp_path, monkeypatch):
    book = _flavour(tmp_path, flavour)
    excel = big_workbook.write(tmp_path / "excel.xlsx", ROWS)
    _read_fast(book, monkeypatch)
    sheet = read_workbook(book).sheets["nnet"]
    # six copied columns and the AVERAGE: seven formulas, not one per cell
    assert len(sheet.formulas) == 6 * ROWS + 1 and len(sheet.formulas.templates) == 7
    assert _families(book) == _families(excel)
    # recomputed, every formula cell equals Excel's cached value
    want = read_workbook(excel).sheets["nnet"].values
    _, _, recalc = recalculate_workbook(book)
    rows, cols, _ = sheet.formulas.arrays()
    for r, c in zip(rows.tolist(), cols.tolist()):
        got = recalc.grids.value("nnet", r, c)
        assert math.isclose(got, want[(r, c)], rel_tol=1e-12, abs_tol=1e-15), (r, c, got, want[(r, c)])


@pytest.mark.parametrize("flavour", WRITERS)
def test_every_writer_trains_and_writes_back_by_splicing(flavour, tmp_path, monkeypatch):
    book = _flavour(tmp_path, flavour, 120)
    excel = big_workbook.write(tmp_path / "excel.xlsx", 120)
    losses = []
    for src in (book, excel):
        out = tmp_path / f"{src.stem}.trained.xlsx"
        rc, text, err = run_cli("train", str(src), "--steps", "2", "-o", str(out))
        assert rc == 0, err
        losses.append(re.search(r"loss\s+\S+ → (\S+)", text).group(1))
        rc, text, err = run_cli("verify", str(out), "--values-only")
        assert rc == 0, text + err
    assert losses[0] == losses[1]
    # the written values went in by splicing: the output still scans fast, equal to the parser
    trained = tmp_path / f"{book.stem}.trained.xlsx"
    snap = _read_fast(trained, monkeypatch)
    values = snap["nnet"][0]
    assert all(values[(r, 34)][0] == "float" for r in range(4, 124))


def test_values_are_added_to_formula_cells_without_one(tmp_path):
    """openpyxl writes <v /> or no <v> at all in a formula cell: the splice fills both and
    agrees with the cell-by-cell patch."""
    src = _flavour(tmp_path, "openpyxl", 60)
    bare = tmp_path / "bare.xlsx"
    _rewrite_sheet(src, bare, lambda d: d.replace(b"<v />", b"", 100).replace(b"<v />", b"<v/>"))
    wb = read_workbook(bare)
    sheet = wb.sheets["nnet"]
    assert sheet.spans is not None
    rows, cols, _ = sheet.formulas.arrays()
    numbers = np.random.default_rng(1).normal(size=len(rows))
    columns = CellColumns(rows, cols, numbers, {})
    fast, slow = tmp_path / "fast.xlsx", tmp_path / "slow.xlsx"
    _all_spliced(bare, zipfile.ZipFile(bare).read(PART))
    patch_workbook(bare, fast, {"nnet": columns}, spans={"nnet": sheet.spans})
    patch_workbook(bare, slow, {"nnet": columns.as_dict()})
    data = zipfile.ZipFile(fast).read(PART)
    assert b"<v/>" not in data and b"<v />" not in data
    got, want = read_workbook(fast).sheets["nnet"].values, read_workbook(slow).sheets["nnet"].values
    assert all(got[p] == want[p] == v for p, v in columns.as_dict().items())


def _formula_values(d: bytes, empty: bytes) -> bytes:
    return re.sub(rb"(</f>|<f [^>]*/>)<v>[^<]*</v>", rb"\1" + empty, d)


SPELLINGS = {
    "<v/>": lambda d: _formula_values(d, b"<v/>"),
    "<v />": lambda d: _formula_values(d, b"<v />"),
    "<v></v>": lambda d: _formula_values(d, b"<v></v>"),
    "no <v>": lambda d: _formula_values(d, b""),
    't="n"': lambda d: re.sub(rb'<c r="([A-Z]+[0-9]+)">', rb'<c r="\1" t="n">', d),
    "inline strings with s": lambda d: d.replace(b't="inlineStr"', b's="0" t="inlineStr"'),
}
# per-cell formula texts, as openpyxl writes them, with the attributes other writers add
TEXT_SPELLINGS = {
    "<f>": lambda d: d,
    '<f aca="false">': lambda d: d.replace(b"<f>", b'<f aca="false">'),
    '<f ca="1">': lambda d: d.replace(b"<f>", b'<f ca="1">'),
}


@pytest.mark.parametrize("spelling", sorted(SPELLINGS))
def test_each_plain_spelling_is_scanned(spelling, tmp_path, monkeypatch):
    base = big_workbook.write(tmp_path / "base.xlsx", 80)
    odd = tmp_path / "odd.xlsx"
    _rewrite_sheet(base, odd, SPELLINGS[spelling])
    data = zipfile.ZipFile(odd).read(PART)
    assert data != zipfile.ZipFile(base).read(PART)
    _read_fast(odd, monkeypatch)
    _all_spliced(odd, data)


def _all_spliced(path: Path, data: bytes) -> None:
    """New values for every formula cell go in by splicing, none left to the general path."""
    sheet = read_workbook(path).sheets["nnet"]
    rows, cols, _ = sheet.formulas.arrays()
    for spans in (sheet.spans[1], None):         # the reader's layout, and the writer's own scan
        done = splice_numbers(data, rows, cols, np.arange(len(rows)) + 0.5, spans)
        assert done is not None and not done[1].any()


@pytest.mark.parametrize("spelling", sorted(TEXT_SPELLINGS))
def test_per_cell_formula_texts_are_one_formula_per_column(spelling, tmp_path, monkeypatch):
    base = big_workbook.write(tmp_path / "base.xlsx", 80, flavour="openpyxl-write-only")
    odd = tmp_path / "odd.xlsx"
    _rewrite_sheet(base, odd, TEXT_SPELLINGS[spelling])
    _read_fast(odd, monkeypatch)
    assert len(read_workbook(odd).sheets["nnet"].formulas.templates) == 7


def _group(texts: list[str], rows: list[int], cols: list[int] | None = None) -> list[list[int]]:
    joined = "".join(texts).encode()
    ends = np.cumsum([len(t.encode()) for t in texts])
    starts = ends - [len(t.encode()) for t in texts]
    a = np.frombuffer(joined + b"\0" * 16, np.uint8)
    groups, rest = copied_runs(a, starts, ends, np.array(rows), np.array(cols or [1] * len(texts)),
                               lambda i: texts[i].replace("&quot;", '"').replace("&#52;", "4"))
    return sorted(sorted(m.tolist()) for _, _, m in groups) + [sorted(rest.tolist())]


def test_copies_are_the_texts_a_move_would_write():
    rows = [4, 5, 6, 7]
    # relative rows move, absolute ones and strings do not
    assert _group([f'$A{r}*B$2+"A4"&C{r + 1}' for r in rows], rows) == [[0, 1, 2, 3], []]
    assert _group(["A4*2", "A5*2", "A5*2", "A7*2"], rows) == [[0, 1, 3], [2]]   # row 6 reads A5: not a copy
    assert _group(["SUM(4:4)", "SUM(5:5)", "SUM(4:4)", "SUM(7:7)"], rows) == [[0, 1, 3], [2]]
    assert _group(["A9*1", "A10*1", "A11*1", "A12*1"], rows) == [[0, 1, 2, 3], []]   # a digit more
    assert _group(["LOG10(A4)", "LOG10(A5)", "LOG10(A6)", "LOG11(A7)"], rows) == [[0, 1, 2], [3]]
    # a column each: the same text in two columns is two formulas
    assert _group(["A4", "A5", "B4", "B5"], [4, 5, 4, 5], [1, 1, 2, 2]) == [[0, 1], [2, 3], []]
    # LibreOffice escapes quotes: the references are found in the formula, a string is not one
    assert pieces('IF(A4=&quot;B12&quot;,1,0)', 'IF(A4="B12",1,0)') == [b"IF(A", 4, b'=&quot;B12&quot;,1,0)']
    assert _group([f'IF(A{r}=&quot;B12&quot;,1,0)' for r in rows], rows) == [[0, 1, 2, 3], []]
    assert _group(['IF(A4=&quot;B12&quot;,1,0)', 'IF(A5="B12",1,0)', 'IF(A6=&quot;B13&quot;,1,0)',
                   'IF(A7=&quot;B12&quot;,1,0)'], rows) == [[0, 3], [1], [2]]
    assert pieces("A04", "A04") is None
    assert pieces("A&#52;", "A4") is None                                      # digits as entities


def test_shape_key_moves_row_ranges():
    assert shape_key("=SUM(4:4)", 10, 2) != shape_key("=SUM(4:4)", 11, 2)
    assert shape_key("=SUM(4:4)", 10, 2) == shape_key("=SUM(5:5)", 11, 2)
    assert shape_key("=SUM($4:$4)", 10, 2) == shape_key("=SUM($4:$4)", 11, 2)


def test_the_same_row_range_text_in_two_rows_reads_the_same_row(tmp_path):
    """B10 and B11 both hold =SUM(4:4): one formula text, two different R1C1 shapes."""
    import openpyxl
    wb = openpyxl.Workbook()
    ws = wb.active
    for c, v in enumerate([1.0, 2.0, 4.0], start=1):
        ws.cell(4, c, v)
        ws.cell(5, c, 100 * v)
    ws["E10"] = "=SUM(4:4)"
    ws["E11"] = "=SUM(4:4)"
    ws["E12"] = "=SUM(5:5)"
    path = tmp_path / "rows.xlsx"
    wb.save(path)
    _, _, recalc = recalculate_workbook(path)
    got = [recalc.grids.value(ws.title, r, 5) for r in (10, 11, 12)]
    assert got == [7.0, 7.0, 700.0]


def test_a_column_of_errors_is_read_in_bulk_as_the_parser_reads_it(tmp_path, monkeypatch):
    book = big_workbook.write(tmp_path / "broken.xlsx", 200, broken=True)
    snap = _read_fast(book, monkeypatch)
    values = snap["nnet"][0]
    assert values[(4, 29)] == ("CellError", CellError("#VALUE!")) and values[(1, 34)][1] == CellError("#VALUE!")


@pytest.mark.parametrize("empty", [b"<v></v>", b"<v/>"])
def test_an_empty_text_result_is_the_empty_string(empty, tmp_path, monkeypatch):
    """LibreOffice saves a formula giving "" as t="str" with an empty <v>: the value is "", not
    an empty cell (COUNTA counts it, ISBLANK says FALSE); an empty <v/> of a number is nothing."""
    base = big_workbook.write(tmp_path / "base.xlsx", 40)
    odd = tmp_path / "odd.xlsx"
    text_result = b'<c r="AG1" t="str"><f>""</f>' + empty + b"</c>"
    _rewrite_sheet(base, odd, lambda d: re.sub(rb'<c r="A4"><v>[^<]*</v>', b'<c r="A4"><v/>', d.replace(
        b'<c r="AG1" t="inlineStr"><is><t>Total loss:</t></is></c>', text_result)))
    values = _read_fast(odd, monkeypatch)["nnet"][0]
    assert values[(1, 33)] == ("str", "") and (4, 1) not in values


@pytest.mark.parametrize("flavour", ["excel", "openpyxl-write-only"])
def test_a_body_scanned_in_pieces_reads_as_in_one(flavour, tmp_path, monkeypatch):
    """A big <sheetData> is scanned in pieces cut before a <row>: the same cells, formulas,
    copies and value spans as one scan, and as the XML parser."""
    from xl2nn.reader import scan
    book = big_workbook.write(tmp_path / f"{flavour}.xlsx", 200, flavour=flavour)
    data = zipfile.ZipFile(book).read(PART)
    whole = scan.locate(data, *scan.sheet_data(data))
    one = _read_fast(book, monkeypatch)
    monkeypatch.setattr(scan, "CHUNK_BYTES", 1500)
    assert len(scan._chunks(data, *scan.sheet_data(data))) > 10
    assert _read_fast(book, monkeypatch) == one
    pieces_ = scan.locate(data, *scan.sheet_data(data))
    for name in ("rows", "cols", "kind", "vo", "ve", "vci", "close"):
        assert np.array_equal(getattr(pieces_, name), getattr(whole, name)), name
    _all_spliced(book, data)
    assert _families(book) == _families(big_workbook.write(tmp_path / "excel.xlsx", 200))


@pytest.mark.parametrize("block", [1, 7, 1 << 16])
def test_values_spliced_in_blocks_equal_the_cell_by_cell_patch(block, tmp_path, monkeypatch):
    import xl2nn.writer.columns as columns_module
    monkeypatch.setattr(columns_module, "_BLOCK", block)
    src = _flavour(tmp_path, "openpyxl", 50)
    sheet = read_workbook(src).sheets["nnet"]
    rows, cols, _ = sheet.formulas.arrays()
    numbers = np.random.default_rng(2).normal(size=len(rows)) * 1e3
    columns = CellColumns(rows, cols, numbers, {})
    fast, slow = tmp_path / "fast.xlsx", tmp_path / "slow.xlsx"
    patch_workbook(src, fast, {"nnet": columns}, spans={"nnet": sheet.spans})
    patch_workbook(src, slow, {"nnet": columns.as_dict()})
    got, want = read_workbook(fast).sheets["nnet"].values, read_workbook(slow).sheets["nnet"].values
    assert dict(got.items()) == dict(want.items())
    assert all(got[p] == v for p, v in columns.as_dict().items())


def test_libreoffice_opens_the_trained_copy_of_an_openpyxl_file_and_agrees(tmp_path):
    """The values spliced into openpyxl's empty formula cells are well-formed and right:
    LibreOffice, recalculating the written copy from scratch, gets the same numbers."""
    if find_soffice() is None:
        pytest.skip("LibreOffice (soffice) is not installed")
    from .libreoffice import recalculate as lo_recalculate
    src = big_workbook.write(tmp_path / "src.xlsx", 60, flavour="openpyxl-write-only")
    out = tmp_path / "trained.xlsx"
    rc, _, err = run_cli("train", str(src), "--steps", "3", "-o", str(out))
    assert rc == 0, err
    lo = lo_recalculate(out, tmp_path / "lo.xlsx")
    ours, theirs = read_workbook(out).sheets["nnet"], read_workbook(lo).sheets["nnet"]
    rows, cols, _ = ours.formulas.arrays()
    assert len(rows) == 6 * 60 + 1
    for pos in zip(rows.tolist(), cols.tolist()):
        assert math.isclose(ours.values[pos], theirs.values[pos], rel_tol=1e-9, abs_tol=1e-12), pos
    assert ours.values[(4, 18)] != read_workbook(src).sheets["nnet"].values[(4, 18)]     # trained weights


def test_the_titanic_sample_saved_by_libreoffice_reads_fast_and_computes_the_same(tmp_path, monkeypatch):
    """LibreOffice writes each copied formula's own text, with `&quot;` for the quotes of
    IF(Sex="male",1,0) and its tables' references as it spells them: read fast, grouped, and
    recomputed to the sample's own cached values."""
    if find_soffice() is None:
        pytest.skip("LibreOffice (soffice) is not installed")
    from .libreoffice import recalculate as lo_recalculate
    src = ROOT / "sample_workbooks" / "titanic.xlsx"
    saved = lo_recalculate(src, tmp_path / "titanic.xlsx")
    assert b"&quot;" in zipfile.ZipFile(saved).read("xl/worksheets/sheet3.xml")
    wb = read_workbook(saved)
    want = read_workbook(src)
    for name in ("linear", "nnet", "mmult"):
        sheet = wb.sheets[name]
        assert sheet.spans is not None
        assert len(sheet.formulas.templates) < 40 < len(sheet.formulas)       # copies, not one per cell
    with monkeypatch.context() as m:
        _slow(m)
        slow = read_workbook(saved)
    _, _, recalc = recalculate_workbook(saved)
    for name in ("linear", "nnet", "mmult"):
        rows, cols, _ = wb.sheets[name].formulas.arrays()
        assert {(r, c) for r, c in zip(rows.tolist(), cols.tolist())} == set(slow.sheets[name].formulas)
        for r, c in zip(rows.tolist(), cols.tolist()):
            got, cached = recalc.grids.value(name, r, c), want.sheets[name].values[(r, c)]
            assert got == cached or math.isclose(got, cached, rel_tol=1e-12, abs_tol=1e-15), (name, r, c)
