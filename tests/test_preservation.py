"""Nothing lost: `train` and `import-weights` change the parameter cells and cached values only.

The input is a Solver workbook carrying what real workbooks carry beside the model: a chart,
an image, a drawing shape, comments, data validation, conditional formatting (with an x14
data bar in the sheet's extLst), a pivot table with its cache, more sheets, and for the .xlsm
a VBA project. openpyxl builds what it can; the rest is added as raw parts, as Excel writes
them. Every part the commands have no reason to touch must come back byte for byte; the
sheets that hold recomputed values must keep every cell's formula, type and style; and the
output must open in openpyxl and in LibreOffice.
"""
from __future__ import annotations

import json
import re
import struct
import warnings
import zipfile
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from defusedxml import ElementTree as SafeET

from .libreoffice import find_soffice, recalculate_many

from .conftest import run_cli

openpyxl = pytest.importorskip("openpyxl")

from openpyxl.chart import LineChart, Reference  # noqa: E402
from openpyxl.comments import Comment  # noqa: E402
from openpyxl.formatting.rule import CellIsRule  # noqa: E402
from openpyxl.styles import Font, PatternFill  # noqa: E402
from openpyxl.workbook.defined_name import DefinedName  # noqa: E402
from openpyxl.worksheet.datavalidation import DataValidation  # noqa: E402

NS_MAIN = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
NS_REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
M = "{%s}" % NS_MAIN
REL = NS_REL + "/"

MODEL, DATA = "xl/worksheets/sheet1.xml", "xl/worksheets/sheet2.xml"
BOOKKEEPING = {"[Content_Types].xml", "xl/workbook.xml", "xl/_rels/workbook.xml.rels", "docProps/app.xml",
               "xl/styles.xml"}
CHANGED_SHEETS = {MODEL, DATA}          # the parameter sheet, and a sheet with a formula reading it
PARAMS = {"E2", "E3"}

X = [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5]
Y = [1.1, 1.9, 3.2, 3.9, 5.1, 6.0, 6.8, 8.1, 9.0, 9.9]
W0 = (0.5, 0.0)
STEPS, LR = 20, 0.05
REGIONS = [("East", 3), ("West", 5), ("North", 2), ("East", 4), ("West", 1), ("North", 9)]
VBA = b"\xd0\xcf\x11\xe0 not really a VBA project, only bytes to carry \x00\x01\x02"


# --------------------------------------------------------------------------- the workbook

def mse(w) -> float:
    return float(np.mean((w[0] * np.array(X) + w[1] - np.array(Y)) ** 2))


def sgd(w0, steps: int, lr: float) -> np.ndarray:
    """Full-batch gradient descent on the mean squared error, by hand."""
    x, y, w = np.array(X), np.array(Y), np.array(w0, dtype=float)
    for _ in range(steps):
        r = w[0] * x + w[1] - y
        w = w - lr * np.array([np.mean(2 * r * x), np.mean(2 * r)])
    return w


def _png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00\x20\x60\xa0")) + chunk(b"IEND", b""))


def _sub1(pattern: str, repl: str, text: str) -> str:
    new, n = re.subn(pattern, lambda m: m.expand(repl), text)
    assert n == 1, f"test setup: {pattern!r} matched {n} times"
    return new


def _cached(text: str, ref: str, value, t: str | None = None) -> str:
    """Give formula cell `ref` (written by openpyxl with an empty <v/>) Excel's cached value."""
    t_attr = f' t="{t}"' if t else ""
    return _sub1(r'<c r="%s"([^>]*)>(<f>[^<]*</f>)<v\s*/>' % ref, '<c r="%s"\\1%s>\\2<v>%s</v>' % (ref, t_attr, value),
                 text)


X14 = "http://schemas.microsoft.com/office/spreadsheetml/2009/9/main"
DATABAR_ID = "{6A3C0B4E-1F0C-4D2B-9E1A-5C6F7D8E9A01}"
DATABAR = (f'<conditionalFormatting sqref="C2:C11"><cfRule type="dataBar" priority="2"><dataBar><cfvo type="min"/>'
           f'<cfvo type="max"/><color rgb="FF638EC6"/></dataBar><extLst>'
           f'<ext uri="{{B025F937-C7B1-47D3-B67F-A62EFF666E3E}}" '
           f'xmlns:x14="{X14}"><x14:id>{DATABAR_ID}</x14:id></ext></extLst></cfRule></conditionalFormatting>')
X14_EXT = (f'<extLst><ext uri="{{78C0D931-6437-407d-A8EE-F0AAD7539E65}}" xmlns:x14="{X14}"><x14:conditionalFormattings>'
           f'<x14:conditionalFormatting xmlns:xm="http://schemas.microsoft.com/office/excel/2006/main">'
           f'<x14:cfRule type="dataBar" id="{DATABAR_ID}"><x14:dataBar minLength="0" maxLength="100" border="1" '
           f'negativeBarBorderColorSameAsPositive="0"><x14:cfvo type="autoMin"/><x14:cfvo type="autoMax"/>'
           f'<x14:borderColor rgb="FF638EC6"/><x14:negativeFillColor rgb="FFFF0000"/>'
           f'<x14:negativeBorderColor rgb="FFFF0000"/><x14:axisColor rgb="FF000000"/></x14:dataBar></x14:cfRule>'
           f'<xm:sqref>C2:C11</xm:sqref></x14:conditionalFormatting></x14:conditionalFormattings></ext></extLst>')

ANCHOR = ('<twoCellAnchor{edit}><from><col>{c0}</col><colOff>0</colOff><row>{r0}</row><rowOff>0</rowOff></from>'
          '<to><col>{c1}</col><colOff>0</colOff><row>{r1}</row><rowOff>0</rowOff></to>{body}<clientData/>'
          '</twoCellAnchor>')
PICTURE = ('<pic><nvPicPr><cNvPr id="3" name="Picture 2" descr="logo"/><cNvPicPr><a:picLocks noChangeAspect="1"/>'
           '</cNvPicPr></nvPicPr><blipFill><a:blip r:embed="rIdImg1"/><a:stretch><a:fillRect/></a:stretch></blipFill>'
           '<spPr><a:xfrm><a:off x="0" y="0"/><a:ext cx="952500" cy="952500"/></a:xfrm><a:prstGeom prst="rect">'
           '<a:avLst/></a:prstGeom></spPr></pic>')
SHAPE = ('<sp macro="" textlink=""><nvSpPr><cNvPr id="4" name="Rectangle 3"/><cNvSpPr/></nvSpPr><spPr><a:xfrm>'
         '<a:off x="0" y="0"/><a:ext cx="1905000" cy="571500"/></a:xfrm><a:prstGeom prst="rect"><a:avLst/>'
         '</a:prstGeom><a:solidFill><a:srgbClr val="4472C4"/></a:solidFill></spPr><txBody><a:bodyPr '
         'vertOverflow="clip" rtlCol="0" anchor="ctr"/><a:lstStyle/><a:p><a:r><a:rPr lang="en-US" sz="1100"/>'
         '<a:t>Solver minimises E5</a:t></a:r></a:p></txBody></sp>')

PIVOT_CACHE = (
    f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\r\n<pivotCacheDefinition xmlns="{NS_MAIN}" '
    f'xmlns:r="{NS_REL}" r:id="rId1" refreshedBy="test" refreshedDate="45000.5" createdVersion="6" '
    f'refreshedVersion="6" minRefreshableVersion="3" recordCount="6"><cacheSource type="worksheet">'
    f'<worksheetSource ref="A1:B7" sheet="data"/></cacheSource><cacheFields count="2">'
    f'<cacheField name="Region" numFmtId="0"><sharedItems count="3"><s v="East"/><s v="West"/><s v="North"/>'
    f'</sharedItems></cacheField><cacheField name="Amount" numFmtId="0"><sharedItems containsSemiMixedTypes="0" '
    f'containsString="0" containsNumber="1" containsInteger="1" minValue="1" maxValue="9"/></cacheField>'
    f'</cacheFields></pivotCacheDefinition>')
PIVOT_RECORDS = (
    f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\r\n<pivotCacheRecords xmlns="{NS_MAIN}" '
    f'xmlns:r="{NS_REL}" count="6">'
    + "".join(f'<r><x v="{["East", "West", "North"].index(g)}"/><n v="{a}"/></r>' for g, a in REGIONS)
    + "</pivotCacheRecords>")
PIVOT_TABLE = (
    f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\r\n<pivotTableDefinition xmlns="{NS_MAIN}" '
    f'name="PivotTable1" cacheId="1" applyNumberFormats="0" applyBorderFormats="0" applyFontFormats="0" '
    f'applyPatternFormats="0" applyAlignmentFormats="0" applyWidthHeightFormats="1" dataCaption="Values" '
    f'updatedVersion="6" minRefreshableVersion="3" useAutoFormatting="1" itemPrintTitles="1" createdVersion="6" '
    f'indent="0" outline="1" outlineData="1" multipleFieldFilters="0"><location ref="A3:B7" firstHeaderRow="1" '
    f'firstDataRow="1" firstDataCol="1"/><pivotFields count="2"><pivotField axis="axisRow" showAll="0">'
    f'<items count="4"><item x="0"/><item x="2"/><item x="1"/><item t="default"/></items></pivotField>'
    f'<pivotField dataField="1" showAll="0"/></pivotFields><rowFields count="1"><field x="0"/></rowFields>'
    f'<rowItems count="4"><i><x/></i><i><x v="1"/></i><i><x v="2"/></i><i t="grand"><x/></i></rowItems>'
    f'<colItems count="1"><i/></colItems><dataFields count="1"><dataField name="Sum of Amount" fld="1" '
    f'baseField="0" baseItem="0"/></dataFields><pivotTableStyleInfo name="PivotStyleLight16" showRowHeaders="1" '
    f'showColHeaders="1" showRowStripes="0" showColStripes="0" showLastColumn="1"/></pivotTableDefinition>')


def _rels(*rels: tuple[str, str, str]) -> str:
    return ('<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\r\n<Relationships xmlns='
            '"http://schemas.openxmlformats.org/package/2006/relationships">'
            + "".join(f'<Relationship Id="{i}" Type="{t}" Target="{g}"/>' for i, t, g in rels)
            + "</Relationships>")


def build_book(path: Path, *, macro: bool = False) -> Path:
    """The Solver regression workbook with everything else a real one carries; see the module doc."""
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "model"
    for c, head in enumerate(["x", "y", "err", None, "w"], start=1):
        if head:
            ws.cell(1, c, head).font = Font(bold=True)
    for r, (x, y) in enumerate(zip(X, Y), start=2):
        ws.cell(r, 1, x).number_format = "0.0"
        ws.cell(r, 2, y)
        ws.cell(r, 3, f"=($E$2*A{r}+$E$3-B{r})^2").number_format = "0.0000"
    for r, w in zip((2, 3), W0):
        cell = ws.cell(r, 5, w)
        cell.fill = PatternFill("solid", fgColor="FFF2CC")
        cell.number_format = "0.000"
    ws["D5"], ws["E5"] = "loss", "=AVERAGE(C2:C11)"
    ws["E5"].font = Font(bold=True, color="C00000")
    ws["E6"] = '=IF(E5<1,"fit","poor")'
    ws["E7"] = "=E5<100"
    ws["E8"] = "=SUMPRODUCT(A2:A11,B2:B11)"
    ws["G1"] = "parameters are E2:E3"
    ws["E2"].comment = Comment("slope: Solver changes this", "analyst")
    ws["E5"].comment = Comment("minimised by Solver", "analyst")
    dv = DataValidation(type="decimal", operator="between", formula1="-100", formula2="100", showErrorMessage=True)
    ws.add_data_validation(dv)
    dv.add("E2:E3")
    ws.conditional_formatting.add("E5", CellIsRule(operator="greaterThan", formula=["1"],
                                                   fill=PatternFill("solid", fgColor="FFC7CE")))
    chart = LineChart()
    chart.title = "squared errors"
    chart.add_data(Reference(ws, min_col=3, min_row=1, max_row=11), titles_from_data=True)
    ws.add_chart(chart, "H2")

    data = wb.create_sheet("data")
    data.append(["Region", "Amount", "loss"])
    for g, a in REGIONS:
        data.append([g, a])
    data["C2"] = "=model!E5"
    data["D2"] = "=SUM(B2:B7)"

    report = wb.create_sheet("report")          # the pivot table's cells, as Excel stores them
    for r, row in enumerate((["Row Labels", "Sum of Amount"], ["East", 7], ["North", 11], ["West", 6],
                             ["Grand Total", 24]), start=3):
        for c, v in enumerate(row, start=1):
            report.cell(r, c, v)

    for name, text in (("solver_opt", "model!$E$5"), ("solver_adj", "model!$E$2:$E$3"), ("solver_typ", "2"),
                       ("solver_eng", "1"), ("solver_ver", "3")):
        ws.defined_names[name] = DefinedName(name, attr_text=text, hidden=True)
    wb.save(path)

    loss = mse(W0)
    errs = [(W0[0] * x + W0[1] - y) ** 2 for x, y in zip(X, Y)]

    def model(text: str) -> str:
        for r, e in enumerate(errs, start=2):
            text = _cached(text, f"C{r}", repr(e))
        # C3:C11 as one shared formula, as Excel saves a filled-down column
        for r in range(3, 12):
            f = (r'<f t="shared" ref="C3:C11" si="0">($E$2*A3+$E$3-B3)^2</f>' if r == 3
                 else '<f t="shared" si="0"/>')
            text = _sub1(r'(<c r="C%d"[^>]*>)<f>[^<]*</f>' % r, r"\g<1>" + f.replace("\\", "\\\\"), text)
        text = _cached(text, "E5", repr(loss))
        text = _cached(text, "E6", "fit" if loss < 1 else "poor", "str")
        text = _cached(text, "E7", "1", "b")
        text = _cached(text, "E8", repr(float(np.dot(X, Y))))
        text = _sub1(r"(<dataValidations\b)", DATABAR + r"\1", text)
        return _sub1(r"(</worksheet>)", X14_EXT + r"\1", text)

    def data_sheet(text: str) -> str:
        text = _cached(text, "C2", repr(loss))
        return _cached(text, "D2", "24")

    def drawing(text: str) -> str:
        pic = ANCHOR.format(edit=' editAs="oneCell"', c0=7, r0=18, c1=9, r1=23, body=PICTURE)
        shape = ANCHOR.format(edit="", c0=10, r0=18, c1=13, r1=21, body=SHAPE)
        return _sub1(r"(</wsDr>)", pic + shape + r"\1", text)

    def drawing_rels(text: str) -> str:
        return _sub1(r"(</Relationships>)", f'<Relationship Id="rIdImg1" Type="{REL}image" '
                                            r'Target="../media/image1.png"/>\1', text)

    def workbook(text: str) -> str:
        text = _sub1(r' fullCalcOnLoad="1"', "", text)            # as Excel saves: no forced recalculation
        return _sub1(r"(</workbook>)", '<pivotCaches><pivotCache cacheId="1" r:id="rIdPc1"/></pivotCaches>\\1', text)

    def workbook_rels(text: str) -> str:
        extra = (f'<Relationship Id="rIdPc1" Type="{REL}pivotCacheDefinition" '
                 'Target="pivotCache/pivotCacheDefinition1.xml"/>')
        if macro:
            extra += ('<Relationship Id="rIdVba1" Type="http://schemas.microsoft.com/office/2006/relationships/'
                      'vbaProject" Target="vbaProject.bin"/>')
        return _sub1(r"(</Relationships>)", extra.replace("\\", "\\\\") + r"\1", text)

    def content_types(text: str) -> str:
        ct = "application/vnd.openxmlformats-officedocument.spreadsheetml."
        extra = '<Default Extension="png" ContentType="image/png"/>' + "".join(
            f'<Override PartName="/xl/{part}" ContentType="{ct}{kind}+xml"/>'
            for part, kind in (("pivotCache/pivotCacheDefinition1.xml", "pivotCacheDefinition"),
                               ("pivotCache/pivotCacheRecords1.xml", "pivotCacheRecords"),
                               ("pivotTables/pivotTable1.xml", "pivotTable")))
        if macro:
            extra += '<Default Extension="bin" ContentType="application/vnd.ms-office.vbaProject"/>'
            text = _sub1(r'ContentType="%s"' % re.escape(ct + "sheet.main+xml"),
                         'ContentType="application/vnd.ms-excel.sheet.macroEnabled.main+xml"', text)
        return _sub1(r"(</Types>)", extra + r"\1", text)

    edits = {MODEL: model, DATA: data_sheet, "xl/drawings/drawing1.xml": drawing,
             "xl/drawings/_rels/drawing1.xml.rels": drawing_rels, "xl/workbook.xml": workbook,
             "xl/_rels/workbook.xml.rels": workbook_rels, "[Content_Types].xml": content_types}
    added = {"xl/media/image1.png": _png(),
             "xl/pivotCache/pivotCacheDefinition1.xml": PIVOT_CACHE.encode(),
             "xl/pivotCache/_rels/pivotCacheDefinition1.xml.rels":
                 _rels(("rId1", REL + "pivotCacheRecords", "pivotCacheRecords1.xml")).encode(),
             "xl/pivotCache/pivotCacheRecords1.xml": PIVOT_RECORDS.encode(),
             "xl/pivotTables/pivotTable1.xml": PIVOT_TABLE.encode(),
             "xl/pivotTables/_rels/pivotTable1.xml.rels":
                 _rels(("rId1", REL + "pivotCacheDefinition", "../pivotCache/pivotCacheDefinition1.xml")).encode(),
             "xl/worksheets/_rels/sheet3.xml.rels":
                 _rels(("rId1", REL + "pivotTable", "../pivotTables/pivotTable1.xml")).encode()}
    if macro:
        added["xl/vbaProject.bin"] = VBA
    with zipfile.ZipFile(path) as zin:
        items = [(info.filename, zin.read(info.filename)) for info in zin.infolist()]
    assert not set(added) & {n for n, _ in items}, "test setup: openpyxl wrote a part this builder adds"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zout:
        for name, data in items:
            if name in edits:
                data = edits[name](data.decode("utf-8")).encode("utf-8")
            zout.writestr(name, data)
        for name, data in added.items():
            zout.writestr(name, data)
    return path


# --------------------------------------------------------------------------- comparisons

def parts(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def cells(xml: bytes) -> dict[str, dict]:
    """Every cell of a worksheet part: its value type (t, "n" when absent: the writer may drop
    an explicit t="n"), style, other attributes, formula, cached value and inline text."""
    root = SafeET.fromstring(xml)
    out = {}
    for row in root.find(M + "sheetData"):
        for c in row.iter(M + "c"):
            f, v, inline = c.find(M + "f"), c.find(M + "v"), c.find(M + "is")
            out[c.get("r")] = {"attrs": {k: a for k, a in c.attrib.items() if k != "t"},
                               "t": c.get("t", "n"), "s": c.get("s"),
                               "f": None if f is None else (f.text, dict(f.attrib)),
                               "v": None if v is None else v.text,
                               "is": None if inline is None else SafeET.tostring(inline)}
    return out


def rows(xml: bytes) -> list[dict]:
    return [dict(r.attrib) for r in SafeET.fromstring(xml).find(M + "sheetData")]


def outside_sheet_data(xml: bytes) -> bytes:
    """The worksheet part with its <sheetData> element cut out."""
    start, end = xml.index(b"<sheetData"), xml.index(b"</sheetData>") + len(b"</sheetData>")
    return xml[:start] + xml[end:]


def elements(xml: bytes, ignore: frozenset[str] = frozenset({"count", "fullCalcOnLoad"})) -> Counter:
    """Every element of an XML part as (path, attributes, text); `ignore`d attributes left out."""
    out: Counter = Counter()

    def walk(el, path):
        here = f"{path}/{el.tag}"
        attrs = tuple(sorted((k, v) for k, v in el.attrib.items() if k not in ignore))
        out[(here, attrs, (el.text or "").strip())] += 1
        for child in el:
            walk(child, here)
    walk(SafeET.fromstring(xml), "")
    return out


def assert_preserved(src: Path, dst: Path, weights: dict[str, float], new_sheet: str | None) -> None:
    """dst is src with the parameter cells set to `weights` and nothing else lost."""
    a, b = parts(src), parts(dst)
    assert list(b)[:len(a)] == list(a)                      # every part, in order; new ones at the end
    changed = {n for n in a if a[n] != b[n]}
    unexpected = changed - CHANGED_SHEETS - BOOKKEEPING
    assert not unexpected, f"parts changed that had no reason to: {unexpected}"
    assert MODEL in changed

    # the bookkeeping parts only gained entries (new sheet, content types, styles, calcPr flag)
    for name in changed & BOOKKEEPING:
        lost = elements(a[name]) - elements(b[name])
        assert not lost, f"{name} lost {list(lost)[:3]}"
    wb = SafeET.fromstring(b["xl/workbook.xml"])
    assert wb.find(f"{M}calcPr").get("fullCalcOnLoad") == "1"
    assert [p.get("cacheId") for p in wb.iter(M + "pivotCache")] == ["1"]

    # new parts: the trace sheet and its drawing and chart, nothing else
    new = set(b) - set(a)
    if new_sheet is None:
        assert not new
    else:
        names = [s.get("name") for s in wb.find(M + "sheets")]
        assert names == ["model", "data", "report", new_sheet]
        assert {re.sub(r"\d+", "N", n) for n in new} == {
            "xl/worksheets/sheetN.xml", "xl/worksheets/_rels/sheetN.xml.rels", "xl/drawings/drawingN.xml",
            "xl/drawings/_rels/drawingN.xml.rels", "xl/charts/chartN.xml"}, new

    # the changed sheets: the same cells with the same formulas, types and styles
    for name in CHANGED_SHEETS:
        assert outside_sheet_data(b[name]) == outside_sheet_data(a[name]), f"{name}: markup outside sheetData"
        assert rows(b[name]) == rows(a[name])
        before, after = cells(a[name]), cells(b[name])
        assert list(after) == list(before), name
        for ref, was in before.items():
            now = after[ref]
            where = f"{name} {ref}"
            if name == MODEL and ref in PARAMS:
                assert now["s"] == was["s"] and now["t"] == "n" and now["f"] is None, where
                assert float(now["v"]) == weights[ref], where
                continue
            assert now["f"] == was["f"], where
            assert now["t"] == was["t"], where
            assert now["s"] == was["s"], where
            assert now["attrs"] == was["attrs"], where
            if was["f"] is None:                            # constants: untouched
                assert (now["v"], now["is"]) == (was["v"], was["is"]), where
            else:
                assert now["v"] is not None, where


run = run_cli


def model_values(path: Path) -> dict[str, object]:
    """The cached values openpyxl reads (it loads the output without complaint)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")         # "Conditional Formatting extension is not supported"
        book = openpyxl.load_workbook(path, data_only=True)
    assert book.sheetnames[:3] == ["model", "data", "report"]
    assert len(book["model"]._charts) == 1
    assert len(book["report"]._pivots) == 1 and book["report"]._pivots[0].cache is not None
    ws = book["model"]
    assert ws["E2"].comment.text == "slope: Solver changes this"
    assert ws.data_validations.dataValidation[0].sqref == openpyxl.worksheet.cell_range.MultiCellRange("E2:E3")
    return {ref: ws[ref].value for ref in ("E2", "E3", "E5", "E6", "E7", "E8")} | {"data!C2": book["data"]["C2"].value}


# --------------------------------------------------------------------------- the runs

@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("preserve")
    src = build_book(folder / "book.xlsx")
    out = {"src": src}

    dst = folder / "book.trained.xlsx"
    rc, stdout, err = run("train", str(src), "--steps", str(STEPS), "--lr", str(LR), "-o", str(dst), "--json")
    assert rc == 0, err
    assert err == ""
    out["train"] = (json.loads(stdout), dst)

    weights = folder / "w.safetensors"
    rc, _, err = run("export", str(src), "-o", str(weights))
    assert rc == 0, err
    from safetensors.numpy import load_file, save_file
    tensors = load_file(str(weights))
    assert list(tensors) == ["model_E2_E3"] and tensors["model_E2_E3"].shape == (2, 1)
    tensors["model_E2_E3"] = np.array([[2.0], [0.75]])
    save_file(tensors, str(weights))
    dst = folder / "book.imported.xlsx"
    rc, stdout, err = run("import-weights", str(src), str(weights), "-o", str(dst), "--json")
    assert rc == 0, err
    assert err == ""
    out["import"] = (json.loads(stdout), dst)

    xlsm = build_book(folder / "macro.xlsm", macro=True)
    rc, stdout, err = run("train", str(xlsm), "--steps", str(STEPS), "--lr", str(LR), "--json")
    assert rc == 0, err
    out["xlsm"] = (json.loads(stdout), xlsm)
    return out


def test_the_input_is_what_it_claims(runs):
    """The builder's workbook really holds every feature, and openpyxl reads it."""
    src = runs["src"]
    names = set(parts(src))
    assert {"xl/charts/chart1.xml", "xl/media/image1.png", "xl/comments/comment1.xml",
            "xl/pivotTables/pivotTable1.xml", "xl/pivotCache/pivotCacheDefinition1.xml",
            "xl/pivotCache/pivotCacheRecords1.xml"} <= names
    sheet = parts(src)[MODEL]
    for marker in (b"<dataValidation ", b'type="cellIs"', b'type="dataBar"', b"<x14:conditionalFormatting",
                   b'<f t="shared" ref="C3:C11" si="0">', b'<legacyDrawing', b"<drawing "):
        assert marker in sheet, marker
    drawing = parts(src)["xl/drawings/drawing1.xml"]
    assert b"<graphicFrame>" in drawing and b"<pic>" in drawing and b"<sp " in drawing
    values = model_values(src)
    assert values["E5"] == pytest.approx(mse(W0), rel=1e-15) and values["E6"] == "poor" and values["E7"] is True


def test_train_keeps_everything_else(runs):
    info, dst = runs["train"]
    w = sgd(W0, STEPS, LR)
    assert info["start_loss"] == pytest.approx(mse(W0), rel=1e-12)
    assert info["final_loss"] == pytest.approx(mse(w), rel=1e-12)
    assert info["trace_sheet"] == "sgd_steps" and info["trace_rows"] == STEPS + 1
    got = cells(parts(dst)[MODEL])
    trained = {ref: float(got[ref]["v"]) for ref in PARAMS}
    np.testing.assert_allclose([trained["E2"], trained["E3"]], w, rtol=1e-12)
    assert_preserved(runs["src"], dst, trained, "sgd_steps")
    values = model_values(dst)
    assert values["E5"] == pytest.approx(info["final_loss"], rel=1e-12) == values["data!C2"]
    assert values["E6"] == "fit" and values["E7"] is True             # was "poor": a str result, recomputed
    assert values["E8"] == pytest.approx(float(np.dot(X, Y)), rel=1e-15)


def test_import_weights_keeps_everything_else(runs):
    info, dst = runs["import"]
    assert info["objective"] == "model!E5" and info["objective_value"] == pytest.approx(mse((2.0, 0.75)), rel=1e-12)
    assert_preserved(runs["src"], dst, {"E2": 2.0, "E3": 0.75}, None)
    values = model_values(dst)
    assert (values["E2"], values["E3"]) == (2.0, 0.75)
    assert values["E5"] == pytest.approx(mse((2.0, 0.75)), rel=1e-12) == values["data!C2"]
    assert values["E6"] == "fit"


def test_xlsm_keeps_its_vba_project_and_suffix(runs):
    info, src = runs["xlsm"]
    dst = src.with_name("macro.trained.xlsm")
    assert info["output"] == str(dst) and dst.exists()
    a, b = parts(src), parts(dst)
    assert b["xl/vbaProject.bin"] == a["xl/vbaProject.bin"] == VBA
    assert b'macroEnabled.main+xml' in b["[Content_Types].xml"]
    assert b'Extension="bin" ContentType="application/vnd.ms-office.vbaProject"' in b["[Content_Types].xml"]
    assert b"vbaProject.bin" in b["xl/_rels/workbook.xml.rels"]
    got = cells(b[MODEL])
    assert_preserved(src, dst, {ref: float(got[ref]["v"]) for ref in PARAMS}, "sgd_steps")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        book = openpyxl.load_workbook(dst, keep_vba=True)
    assert book.vba_archive is not None and book.vba_archive.read("xl/vbaProject.bin") == VBA


def test_libreoffice_opens_and_recalculates_the_outputs(runs, tmp_path):
    if find_soffice() is None:
        pytest.skip("LibreOffice (soffice) is not installed")
    jobs = {"train": runs["train"][1], "import": runs["import"][1],
            "xlsm": runs["xlsm"][1].with_name("macro.trained.xlsm")}
    pairs = [(path, tmp_path / f"{key}.lo.xlsx") for key, path in jobs.items()]
    recalculate_many(pairs)                     # LibreOffice loads each file and recalculates every formula
    losses = {"train": runs["train"][0]["final_loss"], "import": runs["import"][0]["objective_value"],
              "xlsm": runs["xlsm"][0]["final_loss"]}
    for (key, _), (_, lo) in zip(jobs.items(), pairs):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")     # LibreOffice's own extensions
            book = openpyxl.load_workbook(lo, data_only=True)
        want = ["model", "data", "report"] + ([] if key == "import" else ["sgd_steps"])
        assert book.sheetnames == want, key
        assert book["model"]["E5"].value == pytest.approx(losses[key], rel=1e-12), key
        assert book["data"]["C2"].value == pytest.approx(losses[key], rel=1e-12), key
        assert book["report"]["B7"].value == 24
        names = set(parts(lo))
        assert any(n.startswith("xl/pivotTables/") for n in names), f"{key}: LibreOffice dropped the pivot table"
        assert any(n.startswith("xl/media/") for n in names), f"{key}: LibreOffice dropped the image"
