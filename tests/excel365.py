"""Workbooks written the way Excel 365 saves them, byte for byte in the parts that matter.

openpyxl cannot write a dynamic array: it has no `cm` attribute and no xl/metadata.xml, so
what it saves opens in Excel as a legacy (Ctrl+Shift+Enter) array. Excel 365 saves a formula
that spills as

    <c r="C1" cm="1"><f t="array" ref="C1:C3">_xlfn.ANCHORARRAY(A1)*2</f><v>2</v></c>
    <c r="C2"><v>4</v></c>                                  (spilled cells: values only)

where cm="1" points at the first <bk> of <cellMetadata> in xl/metadata.xml, whose <rc t="1"
v="0"/> names the XLDAPR metadata type and its first future-metadata block,
<xda:dynamicArrayProperties fDynamic="1" fCollapsed="0"/>. A formula whose result is one
value but that Excel evaluates as an array (=SUM(A1:A3*B1:B3)) is saved the same way with a
one-cell ref; formulas legacy Excel computes alike stay plain <f>. New functions carry
_xlfn. (and _xlfn._xlws. for SORT and FILTER), LAMBDA and LET parameters _xlpm., the @
operator is _xlfn.SINGLE, A1# is _xlfn.ANCHORARRAY(A1); a workbook LAMBDA is a defined name
whose text is _xlfn.LAMBDA(...), called from cells by its bare name.
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

from openpyxl.utils.cell import coordinate_from_string, column_index_from_string, range_boundaries

from xl2nn.cells import CellError

MAIN = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
DOC_REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
PKG_REL = "http://schemas.openxmlformats.org/package/2006/relationships"
SHEET_CT = "application/vnd.openxmlformats-officedocument.spreadsheetml"

# xl/metadata.xml as Excel 365 writes it for a workbook holding dynamic arrays.
METADATA = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\r\n'
    f'<metadata xmlns="{MAIN}" xmlns:xda="http://schemas.microsoft.com/office/spreadsheetml/2017/dynamicarray">'
    '<metadataTypes count="1"><metadataType name="XLDAPR" minSupportedVersion="120000" copy="1" '
    'pasteAll="1" pasteValues="1" merge="1" splitFirst="1" rowColShift="1" clearFormats="1" '
    'clearComments="1" assign="1" coerce="1" cellMeta="1"/></metadataTypes>'
    '<futureMetadata name="XLDAPR" count="1"><bk><extLst><ext uri="{bdbb8cdc-fa1e-496e-a857-3c3f30c029c3}">'
    '<xda:dynamicArrayProperties fDynamic="1" fCollapsed="0"/></ext></extLst></bk></futureMetadata>'
    '<cellMetadata count="1"><bk><rc t="1" v="0"/></bk></cellMetadata></metadata>')


@dataclass
class Formula:
    """A formula cell. `text` as Excel saves it (no '=', with its _xlfn. prefixes). `spill`:
    the range a dynamic array fills (saved t="array" ref=spill cm="1"); `dynamic` with no
    spill: a one-cell dynamic array; `legacy`: a Ctrl+Shift+Enter array over `spill`."""

    text: str
    spill: str | None = None
    cached: object = None
    dynamic: bool = False
    legacy: bool = False


def _rc(ref: str) -> tuple[int, int]:
    letters, row = coordinate_from_string(ref)
    return row, column_index_from_string(letters)


def _value_xml(v: object, shared: list[str], formula: bool) -> tuple[str, str]:
    """(the t attribute, the <v> element) of a value."""
    if v is None:
        return "", ""
    if isinstance(v, bool):
        return ' t="b"', f"<v>{int(v)}</v>"
    if isinstance(v, (int, float)):
        return "", f"<v>{repr(float(v)) if not float(v).is_integer() else int(v)}</v>"
    if isinstance(v, CellError):
        return ' t="e"', f"<v>{escape(v.code)}</v>"
    if formula:
        return ' t="str"', f"<v>{escape(str(v))}</v>"
    if v not in shared:
        shared.append(str(v))
    return ' t="s"', f"<v>{shared.index(str(v))}</v>"


def _sheet_xml(cells: dict[str, object], shared: list[str]) -> tuple[str, bool]:
    rows: dict[int, list[tuple[int, str]]] = {}
    dynamic = False
    for ref, v in cells.items():
        r, c = _rc(ref)
        if isinstance(v, Formula):
            t, val = _value_xml(v.cached, shared, True)
            if v.spill is not None or v.dynamic or v.legacy:
                spill = v.spill or ref
                cm = "" if v.legacy else ' cm="1"'
                dynamic |= not v.legacy
                xml = f'<c r="{ref}"{t}{cm}><f t="array" ref="{spill}">{escape(v.text)}</f>{val}</c>'
            else:
                xml = f'<c r="{ref}"{t}><f>{escape(v.text)}</f>{val}</c>'
        else:
            t, val = _value_xml(v, shared, False)
            xml = f'<c r="{ref}"{t}>{val}</c>'
        rows.setdefault(r, []).append((c, xml))
    body = []
    for r in sorted(rows):
        cs = sorted(rows[r])
        body.append(f'<row r="{r}" spans="{cs[0][0]}:{cs[-1][0]}" x14ac:dyDescent="0.25">'
                    + "".join(x for _, x in cs) + "</row>")
    if cells:
        bounds = [_rc(k) for k in cells]
        dim = (f"A1:{_a1(max(b[0] for b in bounds), max(b[1] for b in bounds))}")
    else:
        dim = "A1"
    xml = ('<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\r\n'
           f'<worksheet xmlns="{MAIN}" xmlns:r="{DOC_REL}" '
           'xmlns:mc="http://schemas.openxmlformats.org/markup-compatibility/2006" mc:Ignorable="x14ac xr xr2 xr3" '
           'xmlns:x14ac="http://schemas.microsoft.com/office/spreadsheetml/2009/9/ac" '
           'xmlns:xr="http://schemas.microsoft.com/office/spreadsheetml/2014/revision" '
           'xmlns:xr2="http://schemas.microsoft.com/office/spreadsheetml/2015/revision2" '
           'xmlns:xr3="http://schemas.microsoft.com/office/spreadsheetml/2016/revision3" '
           'xr:uid="{00000000-0001-0000-0000-000000000000}">'
           f'<dimension ref="{dim}"/><sheetViews><sheetView workbookViewId="0"/></sheetViews>'
           '<sheetFormatPr defaultRowHeight="15" x14ac:dyDescent="0.25"/>'
           f'<sheetData>{"".join(body)}</sheetData>'
           '<pageMargins left="0.7" right="0.7" top="0.75" bottom="0.75" header="0.3" footer="0.3"/></worksheet>')
    return xml, dynamic


def _a1(row: int, col: int) -> str:
    from openpyxl.utils import get_column_letter
    return f"{get_column_letter(col)}{row}"


def write_excel365(path: Path, sheets: dict[str, dict[str, object]], names: dict[str, str] | None = None
                   ) -> Path:
    """Write `sheets` ({sheet: {A1 ref: value or Formula}}) and workbook-level defined names
    ({name: text, as saved}) in Excel 365's form."""
    shared: list[str] = []
    parts: dict[str, str] = {}
    dynamic = False
    for i, (name, cells) in enumerate(sheets.items(), start=1):
        parts[f"xl/worksheets/sheet{i}.xml"], d = _sheet_xml(cells, shared)
        dynamic |= d
    n = len(sheets)
    sheet_list = "".join(f'<sheet name="{escape(s)}" sheetId="{i}" r:id="rId{i}"/>'
                         for i, s in enumerate(sheets, start=1))
    defined = "".join(f'<definedName name="{escape(k)}">{escape(v)}</definedName>' for k, v in (names or {}).items())
    parts["xl/workbook.xml"] = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\r\n'
        f'<workbook xmlns="{MAIN}" xmlns:r="{DOC_REL}" '
        'xmlns:mc="http://schemas.openxmlformats.org/markup-compatibility/2006" mc:Ignorable="x15 xr xr6 xr10 xr2" '
        'xmlns:x15="http://schemas.microsoft.com/office/spreadsheetml/2010/11/main" '
        'xmlns:xr="http://schemas.microsoft.com/office/spreadsheetml/2014/revision" '
        'xmlns:xr6="http://schemas.microsoft.com/office/spreadsheetml/2016/revision6" '
        'xmlns:xr10="http://schemas.microsoft.com/office/spreadsheetml/2016/revision10" '
        'xmlns:xr2="http://schemas.microsoft.com/office/spreadsheetml/2015/revision2">'
        '<fileVersion appName="xl" lastEdited="7" lowestEdited="7" rupBuild="28526"/>'
        '<workbookPr defaultThemeVersion="202300"/>'
        '<bookViews><workbookView xWindow="-120" yWindow="-120" windowWidth="29040" windowHeight="15720"/></bookViews>'
        f'<sheets>{sheet_list}</sheets>'
        + (f"<definedNames>{defined}</definedNames>" if defined else "")
        + '<calcPr calcId="191029"/></workbook>')
    rels = [f'<Relationship Id="rId{i}" Type="{DOC_REL}/worksheet" Target="worksheets/sheet{i}.xml"/>'
            for i in range(1, n + 1)]
    rels.append(f'<Relationship Id="rId{n + 1}" Type="{DOC_REL}/styles" Target="styles.xml"/>')
    rels.append(f'<Relationship Id="rId{n + 2}" Type="{DOC_REL}/sharedStrings" Target="sharedStrings.xml"/>')
    if dynamic:
        rels.append(f'<Relationship Id="rId{n + 3}" Type="{DOC_REL}/sheetMetadata" Target="metadata.xml"/>')
        parts["xl/metadata.xml"] = METADATA
    parts["xl/_rels/workbook.xml.rels"] = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\r\n'
        f'<Relationships xmlns="{PKG_REL}">{"".join(rels)}</Relationships>')
    parts["xl/styles.xml"] = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\r\n'
        f'<styleSheet xmlns="{MAIN}"><fonts count="1"><font><sz val="11"/><name val="Aptos Narrow"/></font></fonts>'
        '<fills count="2"><fill><patternFill patternType="none"/></fill><fill><patternFill patternType="gray125"/></fill></fills>'
        '<borders count="1"><border><left/><right/><top/><bottom/><diagonal/></border></borders>'
        '<cellStyleXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0"/></cellStyleXfs>'
        '<cellXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0" xfId="0"/></cellXfs>'
        '<cellStyles count="1"><cellStyle name="Normal" xfId="0" builtinId="0"/></cellStyles></styleSheet>')
    sst = "".join(f"<si><t>{escape(s)}</t></si>" for s in shared)
    parts["xl/sharedStrings.xml"] = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\r\n'
        f'<sst xmlns="{MAIN}" count="{len(shared)}" uniqueCount="{len(shared)}">{sst}</sst>')
    overrides = [f'<Override PartName="/xl/workbook.xml" ContentType="{SHEET_CT}.sheet.main+xml"/>']
    overrides += [f'<Override PartName="/xl/worksheets/sheet{i}.xml" ContentType="{SHEET_CT}.worksheet+xml"/>'
                  for i in range(1, n + 1)]
    overrides.append(f'<Override PartName="/xl/styles.xml" ContentType="{SHEET_CT}.styles+xml"/>')
    overrides.append(f'<Override PartName="/xl/sharedStrings.xml" ContentType="{SHEET_CT}.sharedStrings+xml"/>')
    if dynamic:
        overrides.append(f'<Override PartName="/xl/metadata.xml" ContentType="{SHEET_CT}.sheetMetadata+xml"/>')
    parts["[Content_Types].xml"] = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\r\n'
        '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
        '<Default Extension="xml" ContentType="application/xml"/>' + "".join(overrides) + "</Types>")
    parts["_rels/.rels"] = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\r\n'
        f'<Relationships xmlns="{PKG_REL}"><Relationship Id="rId1" Type="{DOC_REL}/officeDocument" '
        'Target="xl/workbook.xml"/></Relationships>')
    order = ["[Content_Types].xml", "_rels/.rels", "xl/workbook.xml", "xl/_rels/workbook.xml.rels"]
    order += [p for p in parts if p not in order]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in order:
            zf.writestr(p, parts[p].encode("utf-8"))
    return Path(path)


def spill_cells(spill: str) -> list[tuple[int, int]]:
    """Every (row, col) of a range such as 'C1:D3'."""
    c1, r1, c2, r2 = range_boundaries(spill)
    return [(r, c) for r in range(r1, r2 + 1) for c in range(c1, c2 + 1)]


__all__ = ["Formula", "write_excel365", "spill_cells", "METADATA"]
