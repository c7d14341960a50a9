"""The NumPy sheet reader and value splicer against the XML parser and the cell-by-cell patcher.

The fast paths exist for speed only: on every workbook they must give exactly what the
slow, general paths give, and on any form they do not know they must step aside.
"""
from __future__ import annotations

import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xl2nn.arrays import unique, unique_inverse
from xl2nn.cells import CellError
from xl2nn.formula.shape import shape_key
from xl2nn.ir.families import build_families
from xl2nn.reader import read_workbook, xlsx
from xl2nn.reader.scan import _numbers
from xl2nn.writer import CellColumns, patch_workbook

from .conftest import REFERENCE, ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import big_workbook  # noqa: E402

SAMPLES = sorted((ROOT / "sample_workbooks").glob("*.xlsx"))


def _slow(monkeypatch) -> None:
    monkeypatch.setattr(xlsx, "scan", lambda *a: None)


def _snapshot(path: Path) -> dict:
    wb = read_workbook(path)
    out = {}
    for s in wb.sheets.values():
        values = {pos: (type(v).__name__, v) for pos, v in s.values.items()}
        # a formula by what it computes at its cell: its R1C1 shape (a copy stored as a shared
        # formula reads as its own text would); an array formula as written, at its anchor
        formulas = {pos: (f.text, f.anchor, f.array) if f.array is not None else shape_key(f.text, *f.anchor)
                    for pos, f in s.formulas.items()}
        out[s.name] = (values, formulas, list(s.arrays), s.max_row, s.max_col)
    return out


def _books(tmp_path: Path) -> list[Path]:
    books = list(SAMPLES)
    if REFERENCE.exists():
        books.append(REFERENCE)
    books.append(big_workbook.write(tmp_path / "big.xlsx", 300))
    return books


def test_fast_and_xml_readers_agree(tmp_path, monkeypatch):
    for book in _books(tmp_path):
        wb = read_workbook(book)
        model_sheets = [s for s in wb.sheets.values() if len(s.formulas) > 100]
        assert model_sheets and all(s.spans is not None for s in model_sheets), f"{book.name}: fast path not taken"
        fast = _snapshot(book)
        with monkeypatch.context() as m:
            _slow(m)
            assert read_workbook(book).sheets[model_sheets[0].name].spans is None
            slow = _snapshot(book)
        assert fast == slow, book.name


def _rewrite_sheet(src: Path, dst: Path, edit) -> None:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename == "xl/worksheets/sheet1.xml":
                data = edit(data)
            zout.writestr(info, data)


ODD_FORMS = {
    "attributes before r": lambda d: d.replace(b'<c r="A4">', b'<c s="0" r="A4">', 1),
    "cell without r": lambda d: d.replace(b'<c r="G5">', b"<c>", 1).replace(b'<c r="H5">', b'<c r="H5">', 1),
    "comment": lambda d: d.replace(b"</row>", b"<!-- a note --></row>", 1),
    "pretty-printed": lambda d: d.replace(b"<c ", b"\n  <c ").replace(b"<row ", b"\n<row "),
    "namespace prefix": lambda d: d.replace(b"<worksheet xmlns=", b"<x:worksheet xmlns:x=")
                                   .replace(b"</worksheet>", b"</x:worksheet>")
                                   .replace(b"<", b"<x:").replace(b"<x:/", b"</x:").replace(b"<x:?", b"<?")
                                   .replace(b"<x:x:", b"<x:").replace(b"</x:x:", b"</x:"),
    "value with attribute": lambda d: d.replace(b'<c r="A4"><v>', b'<c r="A4"><v xml:space="preserve">', 1),
    "entity in a string": lambda d: d.replace(b"<t>Survived</t>", b"<t>Survived &#38; &amp; &lt;</t>", 1),
    "t after s": lambda d: d.replace(b'<c r="AG1" t="inlineStr">', b'<c r="AG1" s="0" t="inlineStr">', 1),
    "empty value": lambda d: d.replace(b'<c r="H4"><v>', b'<c r="H4"><v></v><v>', 1),
    # spellings that would hide a t="..." or a shared formula from a byte search
    "single-quoted type": lambda d: d.replace(b'<c r="A3" t="inlineStr">', b"<c r=\"A3\" t='inlineStr'>", 1),
    "spaced type": lambda d: d.replace(b'<c r="A3" t="inlineStr">', b'<c r="A3" t = "inlineStr">', 1),
    "newline in a tag": lambda d: d.replace(b'<c r="A3" t="inlineStr">', b'<c r="A3"\nt="inlineStr">', 1),
    "single-quoted shared formulas": lambda d: d.replace(b'<f t="shared" ref="AC4:AC43" si="0">',
                                                         b"<f t='shared' ref='AC4:AC43' si='0'>")
                                                .replace(b'<f t="shared" si="0"/>', b"<f t='shared' si='0'/>"),
}


@pytest.mark.parametrize("form", sorted(ODD_FORMS))
def test_odd_forms_read_as_the_xml_parser_reads_them(form, tmp_path, monkeypatch):
    base = big_workbook.write(tmp_path / "base.xlsx", 40)
    odd = tmp_path / "odd.xlsx"
    _rewrite_sheet(base, odd, ODD_FORMS[form])
    with monkeypatch.context() as m:
        _slow(m)
        try:
            want = _snapshot(odd)
        except Exception as exc:          # the XML parser refuses it: so must the reader
            with pytest.raises(type(exc)):
                _snapshot(odd)
            return
    assert _snapshot(odd) == want


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(allow_nan=False, allow_infinity=False) | st.integers(-10**17, 10**17).map(float),
                min_size=1, max_size=50))
def test_numbers_are_read_exactly_as_float_reads_them(xs):
    texts = [repr(x).encode() for x in xs] + [repr(x).removesuffix(".0").encode() for x in xs]
    width = max(map(len, texts))
    w = np.zeros((len(texts), width), np.uint8)
    for i, t in enumerate(texts):
        w[i, :len(t)] = np.frombuffer(t, np.uint8)
    got = _numbers(w)
    want = np.array([float(t) for t in texts])
    assert np.array_equal(got, want) and np.array_equal(np.signbit(got), np.signbit(want))


def test_shape_key_tells_references_from_look_alikes():
    assert shape_key("=($A4-AG4)^2", 4, 34) == shape_key("=($A5-AG5)^2", 5, 34)
    assert shape_key("=A4", 4, 1) != shape_key("=A4", 5, 1)
    assert shape_key('="A1"&A1', 1, 2) != shape_key('="A2"&A2', 2, 2)        # a string is not a reference
    assert shape_key("=LOG10(B1)", 1, 1) == shape_key("=LOG10(B2)", 2, 1)    # LOG10( is a function
    assert shape_key("=ZZZ1", 1, 1) != shape_key("=ZZZ2", 2, 1)              # beyond XFD: a name
    assert shape_key("='Q1 A1'!B1", 1, 1) == shape_key("='Q1 A1'!B2", 2, 1)


def test_families_are_the_same_with_one_parse_per_shape(monkeypatch):
    """The openpyxl-built samples store one text per cell: grouping them by shape key must give
    the families that parsing every cell gives."""
    from xl2nn.formula import FormulaParser
    wb = read_workbook(ROOT / "sample_workbooks" / "titanic.xlsx")
    cached, _ = build_families(wb)
    counter = iter(range(10**9))
    monkeypatch.setattr(FormulaParser, "shape", lambda self, *a: next(counter))
    each, _ = build_families(wb)
    key = lambda fams: sorted((f.sheet, f.rows.tolist(), f.cols.tolist(), f.ast) for f in fams)  # noqa: E731
    assert key(cached) == key(each)


def test_spliced_values_equal_the_cell_by_cell_patch(tmp_path):
    src = big_workbook.write(tmp_path / "src.xlsx", 200)
    wb = read_workbook(src)
    sheet = wb.sheets["nnet"]
    rows, cols, _ = sheet.formulas.arrays()
    rng = np.random.default_rng(0)
    numbers = rng.normal(size=len(rows)) * 10.0 ** rng.integers(-8, 8, len(rows))
    other = {(4, 34): "text now", (5, 34): True, (6, 34): CellError("#DIV/0!"), (7, 7): 0.25}
    fast, slow, fresh = tmp_path / "fast.xlsx", tmp_path / "slow.xlsx", tmp_path / "fresh.xlsx"
    columns = CellColumns(rows, cols, numbers, other)
    patch_workbook(src, fast, {"nnet": columns}, spans={"nnet": sheet.spans})
    patch_workbook(src, fresh, {"nnet": columns})                   # scanning the part itself
    patch_workbook(src, slow, {"nnet": columns.as_dict()})
    part = "xl/worksheets/sheet1.xml"
    a, b, c = (zipfile.ZipFile(p).read(part) for p in (fast, fresh, slow))
    assert a == b == c
    got = read_workbook(fast).sheets["nnet"].values
    want = columns.as_dict()
    assert all(got[p] == v for p, v in want.items())


def test_stale_spans_are_not_used(tmp_path):
    """Layouts from another version of the part must be ignored, not spliced by offset."""
    src = big_workbook.write(tmp_path / "src.xlsx", 50)
    other = big_workbook.write(tmp_path / "other.xlsx", 60)
    spans = read_workbook(other).sheets["nnet"].spans
    rows, cols, _ = read_workbook(src).sheets["nnet"].formulas.arrays()
    out = tmp_path / "out.xlsx"
    patch_workbook(src, out, {"nnet": CellColumns(rows, cols, np.full(len(rows), 7.5))}, spans={"nnet": spans})
    values = read_workbook(out).sheets["nnet"].values
    assert all(values[p] == 7.5 for p in zip(rows.tolist(), cols.tolist()))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(-5, 5) | st.integers(-10**12, 10**12), max_size=60))
def test_unique_helpers_match_numpy(xs):
    x = np.array(xs, dtype=np.int64)
    assert np.array_equal(unique(x), np.unique(x))
    u, inv = unique_inverse(x)
    assert np.array_equal(u, np.unique(x)) and np.array_equal(u[inv], x)


def test_generated_big_workbook_verifies(tmp_path):
    """benchmarks/big_workbook.py writes cached values as Excel would: xl2nn recomputes them all."""
    from .conftest import run_cli
    book = big_workbook.write(tmp_path / "nnet.xlsx", 2000)
    rc, out, err = run_cli("verify", str(book))
    assert rc == 0, out + err
    assert "12,001 cells" in out
    rc, out, err = run_cli("train", str(book), "--steps", "3", "-o", str(tmp_path / "t.xlsx"), "--json")
    assert rc == 0, err
    rc, out, err = run_cli("verify", str(tmp_path / "t.xlsx"), "--values-only")
    assert rc == 0, out + err


def test_cli_reads_in_a_forked_child(tmp_path):
    """A fresh `xl2nn` process reads the workbook in a forked child while it imports torch:
    the result, and a bad input's one-line error, must come back through the pipe."""
    import subprocess
    good = ROOT / "sample_workbooks" / "linear_regression.xlsx"
    cmd = [sys.executable, "-c", "import sys, xl2nn.cli as c, xl2nn.reader.xlsx as x; "
           "real = x._ForkedPrefetch; used = []; "
           "x._ForkedPrefetch = lambda p: used.append(p) or real(p); "
           "code = c.main(sys.argv[1:]); print('forked' if used else 'not forked'); sys.exit(code)"]
    r = subprocess.run(cmd + ["inspect", str(good)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "minimise regression!H6" in r.stdout and r.stdout.rstrip().splitlines()[-1] == "forked"
    bad = tmp_path / "bad.xlsx"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    r = subprocess.run(cmd + ["verify", str(bad)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stdout.strip() == "forked"
    assert r.stderr.count("\n") == 1 and r.stderr.startswith(f"xl2nn: error: {bad}") and "Traceback" not in r.stderr
