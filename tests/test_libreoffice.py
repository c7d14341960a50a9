"""LibreOffice must really recalculate, not echo the cached values it was given."""
from __future__ import annotations

import hashlib
import re
import zipfile
from pathlib import Path

import pytest

openpyxl = pytest.importorskip("openpyxl")

from .libreoffice import find_soffice, recalculate, recalculate_many  # noqa: E402

if find_soffice() is None:
    pytest.skip("LibreOffice (soffice/libreoffice) is not on PATH", allow_module_level=True)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write_book(path: Path, a1: float = 2) -> Path:
    """A1, A2 inputs; numeric, aggregate and text/IF formulas (openpyxl stores no cached values)."""
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "Sheet1"
    ws["A1"] = a1
    ws["A2"] = 3
    ws["A3"] = "=A1*A2+1"
    ws["B1"] = "=SUM(A1:A3)"
    ws["C1"] = '=IF(A3>10,"big","small")'
    ws["C2"] = '=CONCATENATE("n=",A3)'
    wb.save(path)
    return path


def _poison_cache(path: Path, value: str = "999") -> None:
    """Rewrite the sheet XML in place so formula cell A3 carries a wrong cached value."""
    with zipfile.ZipFile(path) as zin:
        items = [(info, zin.read(info.filename)) for info in zin.infolist()]
    done = False
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zout:
        for info, data in items:
            if info.filename == "xl/worksheets/sheet1.xml":
                text = data.decode("utf-8")
                text, n = re.subn(
                    r'(<c r="A3"[^>]*>)(<f>A1\*A2\+1</f>)(?:<v\s*/>|<v>[^<]*</v>)?(</c>)',
                    rf"\1\2<v>{value}</v>\3",
                    text,
                )
                assert n == 1, "test setup: formula cell A3 not found in the sheet XML"
                data = text.encode("utf-8")
                done = True
            zout.writestr(info, data)
    assert done


def _values(path: Path) -> dict[str, object]:
    ws = openpyxl.load_workbook(path, data_only=True)["Sheet1"]
    return {ref: ws[ref].value for ref in ("A1", "A2", "A3", "B1", "C1", "C2")}


def test_fresh_book_gets_computed_values(tmp_path: Path) -> None:
    src = _write_book(tmp_path / "book.xlsx")
    before = _sha256(src)
    assert _values(src)["A3"] is None  # nothing cached: any value below is LibreOffice's

    dst = tmp_path / "out" / "book_lo.xlsx"
    assert recalculate(src, dst) == dst

    got = _values(dst)
    assert got["A3"] == 7
    assert got["B1"] == 12
    assert got["C1"] == "small"
    assert got["C2"] == "n=7"
    # The formulas survive the round trip, not just their values.
    assert openpyxl.load_workbook(dst)["Sheet1"]["A3"].value == "=A1*A2+1"
    assert _sha256(src) == before


def test_stale_cache_is_recomputed_and_inputs_matter(tmp_path: Path) -> None:
    stale = _write_book(tmp_path / "stale.xlsx")
    _poison_cache(stale)
    changed = _write_book(tmp_path / "changed.xlsx", a1=5)
    _poison_cache(changed)
    assert _values(stale)["A3"] == 999  # the poison is really there
    assert _values(changed)["A3"] == 999
    hashes = {p: _sha256(p) for p in (stale, changed)}

    out_stale, out_changed = tmp_path / "stale_lo.xlsx", tmp_path / "changed_lo.xlsx"
    assert recalculate_many([(stale, out_stale), (changed, out_changed)]) == [out_stale, out_changed]

    a = _values(out_stale)
    assert a["A3"] == 7
    assert a["B1"] == 12  # 2 + 3 + 7: a SUM over the stale 999 would give 1004
    b = _values(out_changed)
    assert b["A3"] == 16
    assert b["B1"] == 24
    assert b["C1"] == "big"
    assert b["C2"] == "n=16"
    assert {p: _sha256(p) for p in (stale, changed)} == hashes


def test_many_with_clashing_stems(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    one = _write_book(tmp_path / "x" / "model.xlsx", a1=2)
    two = _write_book(tmp_path / "y" / "model.xlsx", a1=5)
    d1, d2 = tmp_path / "d1.xlsx", tmp_path / "d2.xlsx"
    recalculate_many([(one, d1), (two, d2)])
    assert _values(d1)["A3"] == 7
    assert _values(d2)["A3"] == 16


def test_unloadable_input_raises(tmp_path: Path) -> None:
    bad = tmp_path / "broken.xlsx"
    bad.write_bytes(b"PK\x03\x04 this is not a workbook")
    dst = tmp_path / "never.xlsx"
    with pytest.raises(RuntimeError, match="LibreOffice"):
        recalculate(bad, dst, timeout=120)
    assert not dst.exists()


def test_refuses_to_overwrite_source(tmp_path: Path) -> None:
    src = _write_book(tmp_path / "book.xlsx")
    with pytest.raises(ValueError):
        recalculate(src, src)
