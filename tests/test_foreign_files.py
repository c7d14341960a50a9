"""Workbooks openpyxl 3.1.5 refuses still work for everything the model needs.

xl2nn reads the package itself and leaves alone the parts it does not use, so a pivot cache
openpyxl's schema rejects, an autoFilter as LibreOffice writes it, and extension markup
(extLst with unknown URIs, mc:AlternateContent) must neither stop `verify`, `inspect` and
`train` nor change their numbers, and `train` must carry that markup into its output.
Each openpyxl failure is asserted, so the test proves the file is one openpyxl cannot read.
"""
from __future__ import annotations

import json
import re
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from defusedxml import ElementTree as SafeET

from .libreoffice import find_soffice, recalculate

from .conftest import solver_workbook
from .test_preservation import (DATA, LR, MODEL, STEPS, W0, X, Y, assert_preserved, build_book, cells, mse,
                                outside_sheet_data, parts, run, sgd)

openpyxl = pytest.importorskip("openpyxl")

NS_MAIN = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
M = "{%s}" % NS_MAIN
NS_MC = "http://schemas.openxmlformats.org/markup-compatibility/2006"
PIVOT_CACHE = "xl/pivotCache/pivotCacheDefinition1.xml"


# --------------------------------------------------------------------------- helpers

def rewrite(src: Path, dst: Path, edits: dict) -> Path:
    """A copy of the package with some parts' text passed through functions (or replaced by text)."""
    with zipfile.ZipFile(src) as zin:
        items = [(info.filename, zin.read(info.filename)) for info in zin.infolist()]
    names = {n for n, _ in items}
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        for name, data in items:
            if name in edits:
                edit = edits[name]
                data = (edit(data.decode("utf-8")) if callable(edit) else edit).encode("utf-8")
            zout.writestr(name, data)
        for name, text in edits.items():
            if name not in names:
                zout.writestr(name, text.encode("utf-8"))
    return dst


def sub1(pattern: str, repl: str, text: str, flags: int = 0) -> str:
    new, n = re.subn(pattern, lambda m: m.expand(repl), text, flags=flags)
    assert n == 1, f"test setup: {pattern!r} matched {n} times"
    return new


def openpyxl_error(path: Path) -> Exception:
    """The exception openpyxl.load_workbook raises on `path` (fails the test if it reads it)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            openpyxl.load_workbook(path)
    except Exception as exc:
        return exc
    pytest.fail(f"openpyxl {openpyxl.__version__} reads {path.name}: the premise of this test "
                "(openpyxl 3.1.5 cannot) no longer holds")


def gradient(w) -> np.ndarray:
    """d mse / d (a, b), by hand."""
    x, y = np.array(X), np.array(Y)
    r = w[0] * x + w[1] - y
    return np.array([np.mean(2 * r * x), np.mean(2 * r)])


def check_model(path: Path, tmp_path: Path, checked: dict[str, int]) -> tuple[dict, Path]:
    """verify, inspect and train on `path`: each exits 0 with the regression's own numbers.
    `checked`: formula cells with cached numbers per sheet, which verify must all recompute."""
    rc, out, err = run("verify", str(path), "--json")
    assert rc == 0, err + out
    info = json.loads(out)
    assert info["ok"] and [m["objective"] for m in info["models"]] == ["model!E5"]
    assert {s["sheet"]: s["checked"] for s in info["values"]} == checked
    assert all(s["ok"] and s["failed"] == 0 for s in info["values"])
    grads = info["models"][0]["gradients"]
    assert grads["objective_value"] == pytest.approx(mse(W0), rel=1e-12)
    at_w0 = [g for g in grads["checks"] if g["point"] == 0]     # the workbook's own weights
    assert [g["cell"] for g in at_w0] == ["model!E2", "model!E3"] and grads["points"] == 3
    np.testing.assert_allclose([g["autograd"] for g in at_w0], gradient(W0), rtol=1e-12)

    rc, out, err = run("inspect", str(path), "--json")
    assert rc == 0, err
    model = json.loads(out)["model"]
    assert (model["objective"], model["sense"]) == ("model!E5", "min")
    params = [(p["name"], p["range"], p["shape"]) for p in model["parameters"]]
    assert params == [("model_E2_E3", "model!E2:E3", [2, 1])]

    dst = tmp_path / f"{path.stem}.trained{path.suffix}"
    rc, out, err = run("train", str(path), "--steps", str(STEPS), "--lr", str(LR), "-o", str(dst), "--json")
    assert rc == 0, err
    trained = json.loads(out)
    assert trained["warnings"] == []
    w = sgd(W0, STEPS, LR)
    assert trained["start_loss"] == pytest.approx(mse(W0), rel=1e-12)
    assert trained["final_loss"] == pytest.approx(mse(w), rel=1e-12)
    got = cells(parts(dst)[sheet_part(dst, "model")])
    np.testing.assert_allclose([float(got["E2"]["v"]), float(got["E3"]["v"])], w, rtol=1e-12)
    assert float(got["E5"]["v"]) == pytest.approx(trained["final_loss"], rel=1e-12)
    return trained, dst


def sheet_part(path: Path, name: str) -> str:
    from xl2nn.ooxml import sheet_parts
    with zipfile.ZipFile(path) as zf:
        return next(p.path for p in sheet_parts(zf, str(path)) if p.name == name)


def weights_of(dst: Path) -> dict[str, float]:
    got = cells(parts(dst)[MODEL])
    return {ref: float(got[ref]["v"]) for ref in ("E2", "E3")}


FULL_BOOK = {"model": 12, "data": 2}        # C2:C11, E5, E8; data!C2, D2


# --------------------------------------------------------------------------- (a) pivot cache with calculated items

CALCULATED = ('<calculatedItems count="1"><calculatedItem><pivotArea cacheIndex="1" outline="0" fieldPosition="0">'
              '<references count="1"><reference field="0" count="1"><x v="3"/></reference></references></pivotArea>'
              '</calculatedItem></calculatedItems>')


def calculated_items(text: str) -> str:
    """A calculated field (cacheField with a formula) and a calculated item "East+West" whose
    calculatedItem carries no formula attribute (optional in ECMA-376's CT_CalculatedItem;
    openpyxl 3.1.5 requires it)."""
    text = sub1(r'<sharedItems count="3">(.*?)</sharedItems>',
                r'<sharedItems count="4">\1<s v="East+West"/></sharedItems>', text)
    text = sub1(r'<cacheFields count="2">(.*?)</cacheFields>',
                r'<cacheFields count="3">\1<cacheField name="Double" numFmtId="0" formula="Amount*2" '
                r'databaseField="0"/></cacheFields>', text)
    return sub1(r"(</pivotCacheDefinition>)", CALCULATED + r"\1", text)


def test_pivot_cache_with_calculated_items(tmp_path):
    src = rewrite(build_book(tmp_path / "base.xlsx"), tmp_path / "pivot.xlsx", {PIVOT_CACHE: calculated_items})
    err = openpyxl_error(src)
    assert isinstance(err, TypeError) and "CalculatedItem" in str(err) and ".formula should be" in str(err)
    _, dst = check_model(src, tmp_path, FULL_BOOK)
    assert_preserved(src, dst, weights_of(dst), "sgd_steps")          # the pivot parts byte for byte
    assert parts(dst)[PIVOT_CACHE] == parts(src)[PIVOT_CACHE]
    assert b"<calculatedItem>" in parts(dst)[PIVOT_CACHE]


# --------------------------------------------------------------------------- (b) autoFilter as LibreOffice writes it

# LibreOffice 7.4 saves a "Not Empty" standard filter as a customFilter with the operator
# "**none**", which is not an ST_FilterOperator value; openpyxl refuses the whole sheet.
LO_AUTOFILTER = ('<autoFilter ref="A1:C11"><filterColumn colId="0"><customFilters and="true">'
                 '<customFilter operator="**none**" val=""/></customFilters></filterColumn></autoFilter>')
LO_ROW = ('<row r="{r}" customFormat="false" ht="15" hidden="false" customHeight="false" outlineLevel="0" '
          'collapsed="false">{cells}</row>')


def lo_workbook(path: Path) -> Path:
    """The regression as LibreOffice Calc saves it: shared strings, t="n" everywhere, <f aca>,
    visible solver names beside _xlnm._FilterDatabase, and its autoFilter."""
    strings = ["x", "y", "err", "loss"]
    base = solver_workbook(path.with_name("lo_base.xlsx"), [["x"]], {}, params="$E$2:$E$3", objective="$E$5")

    def num(ref: str, v, s: int = 0) -> str:
        return f'<c r="{ref}" s="{s}" t="n"><v>{v!r}</v></c>'

    def formula(ref: str, f: str, v: float) -> str:
        return f'<c r="{ref}" s="0" t="n"><f aca="false">{f}</f><v>{v!r}</v></c>'

    def text(ref: str, i: int) -> str:
        return f'<c r="{ref}" s="0" t="s"><v>{i}</v></c>'

    rows = [LO_ROW.format(r=1, cells=text("A1", 0) + text("B1", 1) + text("C1", 2))]
    for r, (x, y) in enumerate(zip(X, Y), start=2):
        err = (W0[0] * x + W0[1] - y) ** 2
        row = num(f"A{r}", x) + num(f"B{r}", y) + formula(f"C{r}", f"($E$2*A{r}+$E$3-B{r})^2", err)
        if r in (2, 3):
            row += num(f"E{r}", W0[r - 2])
        if r == 5:
            row += text("D5", 3) + formula("E5", "AVERAGE(C2:C11)", mse(W0))
        rows.append(LO_ROW.format(r=r, cells=row))
    sheet = (
        f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<worksheet xmlns="{NS_MAIN}" '
        'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships" '
        'xmlns:xdr="http://schemas.openxmlformats.org/drawingml/2006/spreadsheetDrawing" '
        'xmlns:x14="http://schemas.microsoft.com/office/spreadsheetml/2009/9/main" '
        'xmlns:xr2="http://schemas.microsoft.com/office/spreadsheetml/2015/revision2" '
        f'xmlns:mc="{NS_MC}"><sheetPr filterMode="true"><pageSetUpPr fitToPage="false"/></sheetPr>'
        '<dimension ref="A1:E11"/><sheetViews><sheetView showFormulas="false" showGridLines="true" '
        'showRowColHeaders="true" showZeros="true" rightToLeft="false" tabSelected="true" showOutlineSymbols="true" '
        'defaultGridColor="true" view="normal" topLeftCell="A1" colorId="64" zoomScale="100" zoomScaleNormal="100" '
        'zoomScalePageLayoutView="60" workbookViewId="0"><selection pane="topLeft" activeCell="E2" activeCellId="0" '
        'sqref="E2"/></sheetView></sheetViews><sheetFormatPr defaultColWidth="8.5390625" defaultRowHeight="15" '
        'zeroHeight="false" outlineLevelRow="0" outlineLevelCol="0"></sheetFormatPr><sheetData>'
        + "".join(rows) + "</sheetData>" + LO_AUTOFILTER
        + '<printOptions headings="false" gridLines="false" gridLinesSet="true" horizontalCentered="false" '
        'verticalCentered="false"/><pageMargins left="0.75" right="0.75" top="1" bottom="1" '
        'header="0.511811023622047" footer="0.511811023622047"/><pageSetup paperSize="9" scale="100" fitToWidth="1" '
        'fitToHeight="1" pageOrder="downThenOver" orientation="portrait" blackAndWhite="false" draft="false" '
        'cellComments="none" horizontalDpi="300" verticalDpi="300" copies="1"/><headerFooter differentFirst="false" '
        'differentOddEven="false"><oddHeader></oddHeader><oddFooter></oddFooter></headerFooter></worksheet>')
    names = "".join(f'<definedName function="false" hidden="{h}" localSheetId="0" name="{n}" vbProcedure="false">'
                    f"{t}</definedName>"
                    for n, t, h in (("_xlnm._FilterDatabase", "model!$A$1:$C$11", "true"),
                                    ("solver_adj", "model!$E$2:$E$3", "false"), ("solver_opt", "model!$E$5", "false"),
                                    ("solver_typ", "2", "false")))
    rid = re.search(r'Id="(\w+)"[^>]*worksheets/sheet1\.xml|worksheets/sheet1\.xml"[^>]*Id="(\w+)"',
                    parts(base)["xl/_rels/workbook.xml.rels"].decode())
    workbook = (
        f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<workbook xmlns="{NS_MAIN}" '
        'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"><fileVersion appName="Calc"/>'
        '<workbookPr backupFile="false" showObjects="all" date1904="false"/><workbookProtection/><bookViews>'
        '<workbookView showHorizontalScroll="true" showVerticalScroll="true" showSheetTabs="true" xWindow="0" '
        'yWindow="0" windowWidth="16384" windowHeight="8192" tabRatio="600" firstSheet="0" activeTab="0"/>'
        f'</bookViews><sheets><sheet name="model" sheetId="1" state="visible" r:id="{rid.group(1) or rid.group(2)}"/>'
        f'</sheets><definedNames>{names}</definedNames><calcPr iterateCount="100" refMode="A1" iterate="false" '
        'iterateDelta="0.0001"/><extLst><ext xmlns:loext="http://schemas.libreoffice.org/" '
        'uri="{7626C862-2A13-11E5-B345-FEFF819CDC9F}"><loext:extCalcPr stringRefSyntax="ExcelA1"/></ext></extLst>'
        '</workbook>')
    shared = (f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<sst xmlns="{NS_MAIN}" count="4" '
              'uniqueCount="4">' + "".join(f'<si><t xml:space="preserve">{s}</t></si>' for s in strings) + "</sst>")
    ct_sst = "application/vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"
    return rewrite(base, path, {
        "xl/worksheets/sheet1.xml": sheet, "xl/workbook.xml": workbook, "xl/sharedStrings.xml": shared,
        "xl/_rels/workbook.xml.rels": lambda t: sub1(r"(</Relationships>)", '<Relationship Id="rIdSst" Type="http://'
                                                    'schemas.openxmlformats.org/officeDocument/2006/relationships/'
                                                    r'sharedStrings" Target="sharedStrings.xml"/>\1', t),
        "[Content_Types].xml": lambda t: sub1(r"(</Types>)", f'<Override PartName="/xl/sharedStrings.xml" '
                                                             f'ContentType="{ct_sst}"/>' + r"\1", t)})


def assert_lo_sheet_kept(src: Path, dst: Path) -> None:
    """Outside <sheetData> nothing moved; inside, only the parameters and cached values changed."""
    a, b = parts(src), parts(dst)
    part = sheet_part(src, "model")
    assert outside_sheet_data(b[part]) == outside_sheet_data(a[part])
    assert b"**none**" not in a[part] or b"**none**" in b[part]
    before, after = cells(a[part]), cells(b[part])
    assert list(after) == list(before)
    for ref, was in before.items():
        now = after[ref]
        if ref in ("E2", "E3"):
            assert (now["s"], now["t"], now["f"]) == (was["s"], "n", None)
            continue
        assert (now["f"], now["t"], now["s"], now["attrs"]) == (was["f"], was["t"], was["s"], was["attrs"]), ref
        if was["f"] is None:
            assert now["v"] == was["v"], ref
    for name in set(a) - {part, "xl/workbook.xml", "xl/_rels/workbook.xml.rels", "[Content_Types].xml",
                          "xl/styles.xml"}:
        assert b[name] == a[name], name
    names = [(d.get("name"), d.text) for d in SafeET.fromstring(b["xl/workbook.xml"]).iter(M + "definedName")]
    assert ("_xlnm._FilterDatabase", "model!$A$1:$C$11") in names


def test_libreoffice_autofilter(tmp_path):
    src = lo_workbook(tmp_path / "calc.xlsx")
    err = openpyxl_error(src)
    assert isinstance(err, ValueError) and "could not read worksheets" in str(err)
    assert "Value must be one of" in str(err.__cause__ or err.__context__)
    _, dst = check_model(src, tmp_path, {"model": 11})
    assert_lo_sheet_kept(src, dst)
    assert LO_AUTOFILTER.encode() in parts(dst)["xl/worksheets/sheet1.xml"]


def test_autofilter_saved_by_libreoffice_itself(tmp_path):
    """The same, with the file LibreOffice itself writes for a "Not Empty" filter set in Excel's form."""
    if find_soffice() is None:
        pytest.skip("LibreOffice (soffice) is not installed")
    from openpyxl.worksheet.filters import CustomFilter, CustomFilters, FilterColumn
    rows = [["x", "y", "err", None, None]] + [[x, y, None, None, None] for x, y in zip(X, Y)]
    rows[1][4], rows[2][4] = W0
    rows[4][3] = "loss"
    formulas = {f"C{r}": f"=($E$2*A{r}+$E$3-B{r})^2" for r in range(2, 12)}
    formulas["E5"] = "=AVERAGE(C2:C11)"
    excel = solver_workbook(tmp_path / "excel.xlsx", rows, formulas, params="$E$2:$E$3", objective="$E$5")
    wb = openpyxl.load_workbook(excel)
    ws = wb["model"]
    ws.auto_filter.ref = "A1:C11"
    ws.auto_filter.filterColumn.append(FilterColumn(colId=0, customFilters=CustomFilters(
        customFilter=[CustomFilter(operator="notEqual", val=" ")])))          # Excel's "non-blanks"
    wb.save(excel)
    src = recalculate(excel, tmp_path / "calc.xlsx")     # opened and saved by LibreOffice (with cached values)
    sheet = parts(src)[sheet_part(src, "model")]
    assert b"<autoFilter " in sheet and b'aca="false"' in sheet           # LibreOffice wrote it
    if b'operator="**none**"' in sheet:                 # LibreOffice 7.x; a later one may write valid XML
        assert "Value must be one of" in str(openpyxl_error(src).__cause__)
    _, dst = check_model(src, tmp_path, {"model": 11})
    assert_lo_sheet_kept(src, dst)


# --------------------------------------------------------------------------- (c) unknown extensions

U = "urn:x-xl2nn-test:unknown"
SHEET_NS = (f'xmlns:mc="{NS_MC}" xmlns:x14ac="http://schemas.microsoft.com/office/spreadsheetml/2009/9/ac" '
            'xmlns:xr="http://schemas.microsoft.com/office/spreadsheetml/2014/revision" '
            'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships" '
            'xmlns:xdr="http://schemas.openxmlformats.org/drawingml/2006/spreadsheetDrawing" '
            'xmlns:x14="http://schemas.microsoft.com/office/spreadsheetml/2009/9/main" '
            f'xmlns:u="{U}" mc:Ignorable="x14ac xr u" xr:uid="{{7E5A1D2C-3B4F-4C6D-8E9F-0A1B2C3D4E5F}}"')
CELL_EXT = '<extLst><ext uri="{{0B7C9F42-1D3E-4A5B-8C6D-7E8F9A0B1C2D}}"><u:note text="{text}"/></ext></extLst>'
ROW_EXT = '<extLst><ext uri="{5D6E7F80-9A1B-4C2D-8E3F-4A5B6C7D8E9F}"><u:rowInfo height="auto"/></ext></extLst>'
# A spinner form control linked to the parameter E2, as Excel writes it (inside two
# AlternateContent layers), and an AlternateContent whose Choice needs an unknown namespace.
SHEET_AC = ('<mc:AlternateContent><mc:Choice Requires="x14"><controls><mc:AlternateContent><mc:Choice Requires="x14">'
            '<control shapeId="1025" r:id="rIdCtl1" name="Spinner 1"><controlPr defaultSize="0" autoPict="0">'
            '<anchor moveWithCells="1" sizeWithCells="1"><from><xdr:col>5</xdr:col><xdr:colOff>0</xdr:colOff>'
            '<xdr:row>1</xdr:row><xdr:rowOff>0</xdr:rowOff></from><to><xdr:col>5</xdr:col><xdr:colOff>304800'
            '</xdr:colOff><xdr:row>2</xdr:row><xdr:rowOff>0</xdr:rowOff></to></anchor></controlPr></control>'
            '</mc:Choice></mc:AlternateContent></controls></mc:Choice></mc:AlternateContent>'
            '<mc:AlternateContent><mc:Choice Requires="u"><u:widgets><u:widget name="w1" cell="E3"/></u:widgets>'
            '</mc:Choice><mc:Fallback/></mc:AlternateContent>')
CTRL_PROP = ('<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\r\n<formControlPr xmlns="http://schemas.'
             'microsoft.com/office/spreadsheetml/2009/9/main" objectType="Spin" dx="16" fmlaLink="$E$2" max="100" '
             'page="10"/>')
SHEET_EXT = ('<ext uri="{F00DF00D-0000-4000-8000-00000000C0DE}" xmlns:u2="urn:x-other-vendor"><u2:thing a="1">'
             '<u2:child>text</u2:child></u2:thing></ext>')

WB_NS = (f'xmlns:mc="{NS_MC}" mc:Ignorable="x15 xr xr6 xr10 xr2" '
         'xmlns:x15="http://schemas.microsoft.com/office/spreadsheetml/2010/11/main" '
         'xmlns:xr="http://schemas.microsoft.com/office/spreadsheetml/2014/revision" '
         'xmlns:xr6="http://schemas.microsoft.com/office/spreadsheetml/2016/revision6" '
         'xmlns:xr10="http://schemas.microsoft.com/office/spreadsheetml/2016/revision10" '
         'xmlns:xr2="http://schemas.microsoft.com/office/spreadsheetml/2015/revision2"')
WB_HEAD = ('<mc:AlternateContent><mc:Choice Requires="x15"><x15ac:absPath url="C:\\Users\\analyst\\Documents\\" '
           'xmlns:x15ac="http://schemas.microsoft.com/office/spreadsheetml/2010/11/ac"/></mc:Choice>'
           '</mc:AlternateContent><xr:revisionPtr revIDLastSave="0" '
           'documentId="8_{5C3E3B6E-1111-4222-8333-444455556666}" xr6:coauthVersionLast="47" xr6:coauthVersionMax="47" '
           'xr10:uidLastSave="{00000000-0000-0000-0000-000000000000}"/>')
WB_EXT = ('<extLst><ext uri="{140A7094-0E35-4892-8432-C4D2E57EDEB5}"><x15:workbookPr chartTrackingRefBase="1"/></ext>'
          '<ext uri="{B58B0392-4F1F-4190-BB64-5DF3571DCE5F}" xmlns:xcalcf="http://schemas.microsoft.com/office/'
          'spreadsheetml/2018/calcfeatures"><xcalcf:calcFeatures><xcalcf:feature name="microsoft.com:RD"/>'
          '<xcalcf:feature name="microsoft.com:LET_WF"/></xcalcf:calcFeatures></ext>'
          f'<ext uri="{{C0FFEE00-1234-4567-89AB-CDEF01234567}}" xmlns:u="{U}"><u:anything deep="1"><u:er/></u:anything>'
          '</ext></extLst>')


def extended_sheet(text: str) -> str:
    text = sub1(r"<worksheet ([^>]*)>", r"<worksheet \1 " + SHEET_NS + ">", text)
    text = re.sub(r'<row r="(\d+)"', r'<row r="\1" x14ac:dyDescent="0.25"', text)
    text = sub1(r'(<row r="2")', r'\1 u:flag="1"', text)
    text = sub1(r'(<c r="E2"[^>]*>.*?)(</c>)', r"\1" + CELL_EXT.format(text="slope") + r"\2", text)   # a parameter
    text = sub1(r'(<c r="E5"[^>]*>.*?)(</c>)', r"\1" + CELL_EXT.format(text="objective") + r"\2", text)
    text = sub1(r'(<row r="3"[^>]*>.*?)(</row>)', r"\1" + ROW_EXT + r"\2", text)
    text = sub1(r"(</extLst></worksheet>)", SHEET_EXT + r"\1", text)
    return sub1(r"(<extLst><ext uri=\"\{78C0D931)", SHEET_AC + r"\1", text)   # after the drawings, before extLst


def extended_workbook(text: str) -> str:
    text = sub1(r"<workbook ([^>]*)>", r"<workbook \1 " + WB_NS + ">", text)
    text = sub1(r"(<workbookPr\b)", '<fileVersion appName="xl" lastEdited="7" lowestEdited="7" rupBuild="27328"/>\\1',
                text)
    text = sub1(r"(<workbookPr\b[^>]*/>)", r"\1" + WB_HEAD.replace("\\", "\\\\"), text)
    text = sub1(r"(<workbookView )", r'\1xr2:uid="{D1E2F3A4-B5C6-4D7E-8F90-A1B2C3D4E5F6}" ', text)
    text = sub1(r"<calcPr [^>]*/>", "", text)     # no calcPr: train must add one in schema order
    return sub1(r"(</workbook>)", WB_EXT + r"\1", text)


def test_unknown_extensions_and_alternate_content(tmp_path):
    ctrl = "application/vnd.ms-excel.controlproperties+xml"
    src = rewrite(build_book(tmp_path / "base.xlsx"), tmp_path / "ext.xlsx", {
        MODEL: extended_sheet, "xl/workbook.xml": extended_workbook, "xl/ctrlProps/ctrlProp1.xml": CTRL_PROP,
        "xl/worksheets/_rels/sheet1.xml.rels": lambda t: sub1(
            r"(</Relationships>)", '<Relationship Id="rIdCtl1" Type="http://schemas.openxmlformats.org/officeDocument/'
                                   r'2006/relationships/ctrlProp" Target="../ctrlProps/ctrlProp1.xml"/>\1', t),
        "[Content_Types].xml": lambda t: sub1(r"(</Types>)", f'<Override PartName="/xl/ctrlProps/ctrlProp1.xml" '
                                                             f'ContentType="{ctrl}"/>' + r"\1", t)})
    sheet, book = parts(src)[MODEL], parts(src)["xl/workbook.xml"]
    SafeET.fromstring(sheet), SafeET.fromstring(book)                   # well-formed
    assert sheet.count(b"<mc:AlternateContent>") == 3 and book.count(b"<mc:AlternateContent>") == 1
    assert b"<calcPr" not in book
    _, dst = check_model(src, tmp_path, FULL_BOOK)
    assert_preserved(src, dst, weights_of(dst), "sgd_steps")
    new_sheet, new_book = parts(dst)[MODEL], parts(dst)["xl/workbook.xml"]
    # the cell- and row-level extensions are still in their cells and row
    for ref, note in (("E2", "slope"), ("E5", "objective")):
        tag = re.search(rb'<c r="%s"[^>]*>.*?</c>' % ref.encode(), new_sheet).group(0)
        assert CELL_EXT.format(text=note).encode() in tag, tag
    assert ROW_EXT.encode() in re.search(rb'<row r="3".*?</row>', new_sheet).group(0)
    # calcPr went in before pivotCaches and extLst, as the schema orders them
    children = [el.tag.split("}")[1] for el in SafeET.fromstring(new_book)]
    assert children.index("calcPr") < children.index("pivotCaches") < children.index("extLst")
    assert children[:4] == ["fileVersion", "workbookPr", "AlternateContent", "revisionPtr"]
    assert WB_EXT.encode() in new_book and WB_HEAD.encode() in new_book
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ws = openpyxl.load_workbook(dst, data_only=True)["model"]
    assert ws["E5"].value == pytest.approx(mse(sgd(W0, STEPS, LR)), rel=1e-12)
    assert DATA in parts(dst)


def test_cells_inside_an_extension_after_sheet_data_are_not_read(tmp_path):
    """Only <sheetData> holds cells: a main-namespace <c> inside an <extLst> after it is markup."""
    import zipfile as _zip

    from openpyxl import Workbook

    from xl2nn.reader import read_workbook
    src = tmp_path / "plain.xlsx"
    wb = Workbook()
    wb.active["A1"] = 1.5
    wb.save(src)
    out = tmp_path / "ext.xlsx"
    ns = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
    ext = (f'<extLst><ext uri="{{00000000-0000-0000-0000-000000000000}}">'
           f'<c xmlns="{ns}" r="Z99"><v>5</v></c></ext></extLst>')
    with _zip.ZipFile(src) as zin, _zip.ZipFile(out, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename == "xl/worksheets/sheet1.xml":
                data = data.replace(b"</worksheet>", ext.encode() + b"</worksheet>")
            zout.writestr(info.filename, data)
    sheet = next(iter(read_workbook(out).sheets.values()))
    assert sheet.values == {(1, 1): 1.5}
