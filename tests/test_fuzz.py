"""Property tests: random bytes and random mutations of a valid workbook never give a traceback
(an internal error, exit 3) and never change the input."""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xl2nn import cli

from .conftest import sha256, solver_workbook

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def valid(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("fuzz") / "valid.xlsx"
    rows = [[1.0, 3.0, 0.5], [2.0, 5.0, 0.2], [3.0, 7.0, None]]
    formulas = {f"D{r}": f"=IF(A{r}*$C$1>0,(A{r}*$C$1+$C$2-B{r})^2,0)" for r in (1, 2, 3)}
    formulas["E1"] = "=AVERAGE(D1:D3)"
    solver_workbook(path, rows, formulas, params="$C$1:$C$2", objective="$E$1")
    return path.read_bytes()


def check(tmp: Path, data: bytes, capsys) -> None:
    src = tmp / "case.xlsx"
    src.write_bytes(data)
    before = sha256(src)
    for args in (["inspect", str(src)], ["verify", str(src)]):
        rc = cli.main(args)
        err = capsys.readouterr().err
        assert rc in (0, 1, 2), err
        assert "internal error" not in err and "Traceback" not in err, err
    assert sha256(src) == before


@SETTINGS
@given(data=st.binary(max_size=4096))
def test_random_bytes(tmp_path, capsys, data):
    check(tmp_path, data, capsys)


@SETTINGS
@given(cuts=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=8))
def test_flipped_bytes_in_the_zip(tmp_path, capsys, valid, cuts):
    data = bytearray(valid)
    for pos, value in cuts:
        data[pos % len(data)] = value
    check(tmp_path, bytes(data), capsys)


PARTS = ["xl/worksheets/sheet1.xml", "xl/workbook.xml", "[Content_Types].xml", "xl/_rels/workbook.xml.rels"]


@SETTINGS
@given(part=st.sampled_from(PARTS), start=st.integers(0, 10**5), length=st.integers(0, 40),
       insert=st.text(alphabet='<>/="&;#!abcfrv 0123456789:$AEF*-+()', max_size=40))
def test_mutated_xml_inside_a_valid_zip(tmp_path, capsys, valid, part, start, length, insert):
    """The zip is sound, the XML inside is not: truncated, spliced, or with odd characters."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(valid)) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            body = zin.read(info.filename)
            if info.filename == part:
                at = start % (len(body) + 1)
                body = body[:at] + insert.encode() + body[at + length:]
            zout.writestr(info.filename, body)
    check(tmp_path, out.getvalue(), capsys)
