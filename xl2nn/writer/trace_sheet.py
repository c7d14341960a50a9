"""A new worksheet appended to a workbook: a numeric table, optionally with a native line chart.

This module only describes the sheet (`NewSheet`, `LineChart`) and renders the parts that
belong to it alone (sheet XML, drawing XML, chart XML). Registering those parts in the
package (workbook.xml, rels, content types, styles) is done by `xlsx_patch.patch_workbook`.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np

from ..cells import MAX_COL, MAX_ROW, a1, col_letters, parse_a1

NS_MAIN = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
NS_REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
NS_PKG_REL = "http://schemas.openxmlformats.org/package/2006/relationships"
NS_DRAWING = "http://schemas.openxmlformats.org/drawingml/2006/spreadsheetDrawing"
NS_A = "http://schemas.openxmlformats.org/drawingml/2006/main"
NS_CHART = "http://schemas.openxmlformats.org/drawingml/2006/chart"
REL_CHART = NS_REL + "/chart"

XML_DECL = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\r\n'

# Cells written instead of a number that cannot be stored (+-inf). NaN means "no value"
# (e.g. the update of the last step in a training trace) and is written as an empty cell.
NON_FINITE_ERROR = "#NUM!"

MAX_SHEET_NAME = 31
_BAD_SHEET_CHARS = re.compile(r"[\[\]:*?/\\]")
MAX_CELL_TEXT = 32767

# Chart size in cells when placed by a twoCellAnchor.
CHART_COLS = 9
CHART_ROWS = 20


@dataclass
class LineChart:
    """A native Excel line chart over columns of a NewSheet's table."""

    title: str
    x_title: str
    y_title: str
    x_col: int  # 0-based column index in the NewSheet table used as categories/x values
    y_cols: list[int] = field(default_factory=list)  # 0-based columns, one series each
    anchor: str = ""  # top-left cell of the chart, default: two columns right of the table, row 2


@dataclass
class NewSheet:
    """A worksheet to append: a header row of strings and a float64 table below it.

    NaN entries are written as empty cells, +-inf as #NUM! errors.
    """

    name: str
    header: list[str]
    rows: np.ndarray  # float64, shape (n, len(header))
    number_format: str = "0.000000"  # applied to data cells
    freeze_header: bool = True
    column_width: float = 14.0
    chart: LineChart | None = None


# --------------------------------------------------------------------------- text helpers

_CTRL = re.compile("[\x00-\x08\x0b-\x1f\ufffe\uffff]")
_LITERAL_ESCAPE = re.compile(r"_(x[0-9A-Fa-f]{4}_)")


def plain_text(text: str) -> str:
    """Text for chart titles and caches: characters XML cannot carry are dropped, then escaped."""
    return xml_escape(_CTRL.sub("", text))


def xml_escape(text: str, attribute: bool = False) -> str:
    """Escape for XML element content (or a double-quoted attribute value)."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    if attribute:
        text = text.replace('"', "&quot;").replace("\n", "&#10;").replace("\r", "&#13;").replace("\t", "&#9;")
    return text


def cell_text(text: str) -> str:
    """Excel's string encoding for cell text (ST_Xstring): characters XML cannot carry are
    written as _xHHHH_ (and a literal _xHHHH_ is protected as _x005F_xHHHH_), then escaped."""
    if "_x" in text:
        text = _LITERAL_ESCAPE.sub(r"_x005F_\1", text)
    if _CTRL.search(text):
        text = _CTRL.sub(lambda m: "_x%04X_" % ord(m.group(0)), text)
    return xml_escape(text)


def needs_preserve(text: str) -> bool:
    return bool(text) and (text[0].isspace() or text[-1].isspace() or "\n" in text or "  " in text)


def format_float(x: float) -> str:
    """Shortest text that reads back as the same double; integral values without '.0'."""
    if x.is_integer() and abs(x) < 2**53:
        return str(int(x))
    return repr(x)


def quote_sheet_always(name: str) -> str:
    return "'" + name.replace("'", "''") + "'"


def check_sheet_name(name: str) -> None:
    if not isinstance(name, str) or not name:
        raise ValueError("a new sheet needs a non-empty name")
    if len(name) > MAX_SHEET_NAME:
        raise ValueError(f"sheet name {name!r} is longer than {MAX_SHEET_NAME} characters")
    if _BAD_SHEET_CHARS.search(name) or name[0] == "'" or name[-1] == "'" or _CTRL.search(name):
        raise ValueError(f"sheet name {name!r} contains a character Excel does not allow")


# --------------------------------------------------------------------------- validation

def table_of(sheet: NewSheet) -> np.ndarray:
    """The NewSheet's rows as a 2-D float64 array, checked against the header."""
    check_sheet_name(sheet.name)
    if not sheet.header:
        raise ValueError(f"new sheet {sheet.name!r}: the header is empty")
    if len(sheet.header) > MAX_COL:
        raise ValueError(f"new sheet {sheet.name!r}: {len(sheet.header)} columns exceed Excel's {MAX_COL}")
    rows = np.asarray(sheet.rows, dtype=np.float64)
    if rows.ndim == 1 and rows.size == 0:
        rows = rows.reshape(0, len(sheet.header))
    if rows.ndim != 2 or rows.shape[1] != len(sheet.header):
        raise ValueError(f"new sheet {sheet.name!r}: rows have shape {rows.shape}, "
                         f"expected (n, {len(sheet.header)}) to match the header")
    if rows.shape[0] + 1 > MAX_ROW:
        raise ValueError(f"new sheet {sheet.name!r}: {rows.shape[0]} rows exceed Excel's limit")
    for h in sheet.header:
        if not isinstance(h, str):
            raise ValueError(f"new sheet {sheet.name!r}: header entries must be strings, got {h!r}")
        if len(h) > MAX_CELL_TEXT:
            raise ValueError(f"new sheet {sheet.name!r}: a header is longer than {MAX_CELL_TEXT} characters")
    ch = sheet.chart
    if ch is not None:
        width = len(sheet.header)
        for c in [ch.x_col, *ch.y_cols]:
            if not isinstance(c, (int, np.integer)) or not 0 <= c < width:
                raise ValueError(f"new sheet {sheet.name!r}: chart column {c!r} is not in 0..{width - 1}")
        if not ch.y_cols:
            raise ValueError(f"new sheet {sheet.name!r}: the chart has no series (y_cols is empty)")
        if ch.anchor:
            parse_a1(ch.anchor)  # raises ValueError on a bad address
    return rows


def integral_column(rows: np.ndarray, col: int) -> bool:
    """True if every entry of the column is a finite integer (e.g. a step counter)."""
    if rows.shape[0] == 0:
        return False
    c = rows[:, col]
    return bool(np.all(np.isfinite(c)) and np.all(c == np.round(c)) and np.all(np.abs(c) < 2**53))


# --------------------------------------------------------------------------- sheet XML

def sheet_xml(sheet: NewSheet, rows: np.ndarray, *, header_style: int, data_style: int,
              first_col_style: int, drawing_rid: str | None) -> bytes:
    """The worksheet part: header row of inline strings, then one row per table row."""
    n, width = rows.shape
    last = a1(n + 1, width)
    out: list[str] = [XML_DECL,
                      f'<worksheet xmlns="{NS_MAIN}" xmlns:r="{NS_REL}">',
                      f'<dimension ref="A1:{last}"/>' if (n or width > 1) else '<dimension ref="A1"/>',
                      "<sheetViews>"]
    if sheet.freeze_header:
        out.append('<sheetView workbookViewId="0"><pane ySplit="1" topLeftCell="A2" activePane="bottomLeft" '
                   'state="frozen"/><selection pane="bottomLeft" activeCell="A2" sqref="A2"/></sheetView>')
    else:
        out.append('<sheetView workbookViewId="0"/>')
    out.append("</sheetViews>")
    out.append('<sheetFormatPr defaultRowHeight="15"/>')
    width_txt = format_float(float(sheet.column_width))
    out.append(f'<cols><col min="1" max="{width}" width="{width_txt}" customWidth="1"/></cols>')
    out.append("<sheetData>")
    letters = [col_letters(c + 1) for c in range(width)]
    spans = f"1:{width}"
    hdr = [f'<row r="1" spans="{spans}">']
    for c, text in enumerate(sheet.header):
        sp = ' xml:space="preserve"' if needs_preserve(text) else ""
        hdr.append(f'<c r="{letters[c]}1" s="{header_style}" t="inlineStr"><is><t{sp}>{cell_text(text)}</t></is></c>')
    hdr.append("</row>")
    out.append("".join(hdr))
    styles = [first_col_style] + [data_style] * (width - 1)
    finite = np.isfinite(rows)
    missing = np.isnan(rows)
    for i in range(n):
        r = i + 2
        parts = [f'<row r="{r}" spans="{spans}">']
        vals = rows[i].tolist()
        ok = finite[i].tolist()
        empty = missing[i].tolist()
        for c in range(width):
            if ok[c]:
                parts.append(f'<c r="{letters[c]}{r}" s="{styles[c]}"><v>{format_float(vals[c])}</v></c>')
            elif empty[c]:
                parts.append(f'<c r="{letters[c]}{r}" s="{styles[c]}"/>')
            else:
                parts.append(f'<c r="{letters[c]}{r}" s="{styles[c]}" t="e"><v>{NON_FINITE_ERROR}</v></c>')
        parts.append("</row>")
        out.append("".join(parts))
    out.append("</sheetData>")
    out.append('<pageMargins left="0.7" right="0.7" top="0.75" bottom="0.75" header="0.3" footer="0.3"/>')
    if drawing_rid:
        out.append(f'<drawing r:id="{drawing_rid}"/>')
    out.append("</worksheet>")
    return "".join(out).encode("utf-8")


def sheet_rels_xml(drawing_rid: str, drawing_target: str) -> bytes:
    return (f'{XML_DECL}<Relationships xmlns="{NS_PKG_REL}">'
            f'<Relationship Id="{drawing_rid}" Type="{NS_REL}/drawing" Target="{xml_escape(drawing_target, True)}"/>'
            f"</Relationships>").encode("utf-8")


# --------------------------------------------------------------------------- drawing + chart

def chart_anchor(sheet: NewSheet) -> tuple[int, int]:
    """0-based (col, row) of the chart's top-left cell."""
    ch = sheet.chart
    assert ch is not None
    if ch.anchor:
        row, col = parse_a1(ch.anchor)
        return col - 1, row - 1
    return len(sheet.header) + 1, 1


def drawing_xml(col: int, row: int, chart_rid: str, name: str) -> bytes:
    def marker(tag: str, c: int, r: int) -> str:
        return (f"<xdr:{tag}><xdr:col>{c}</xdr:col><xdr:colOff>0</xdr:colOff>"
                f"<xdr:row>{r}</xdr:row><xdr:rowOff>0</xdr:rowOff></xdr:{tag}>")

    return (f'{XML_DECL}<xdr:wsDr xmlns:xdr="{NS_DRAWING}" xmlns:a="{NS_A}">'
            f'<xdr:twoCellAnchor editAs="oneCell">'
            f"{marker('from', col, row)}{marker('to', col + CHART_COLS, row + CHART_ROWS)}"
            f'<xdr:graphicFrame macro=""><xdr:nvGraphicFramePr><xdr:cNvPr id="2" name="{xml_escape(name, True)}"/>'
            f"<xdr:cNvGraphicFramePr/></xdr:nvGraphicFramePr>"
            f'<xdr:xfrm><a:off x="0" y="0"/><a:ext cx="0" cy="0"/></xdr:xfrm>'
            f'<a:graphic><a:graphicData uri="{NS_CHART}">'
            f'<c:chart xmlns:c="{NS_CHART}" xmlns:r="{NS_REL}" r:id="{chart_rid}"/>'
            f"</a:graphicData></a:graphic></xdr:graphicFrame><xdr:clientData/></xdr:twoCellAnchor>"
            f"</xdr:wsDr>").encode("utf-8")


def drawing_rels_xml(chart_rid: str, chart_target: str) -> bytes:
    return (f'{XML_DECL}<Relationships xmlns="{NS_PKG_REL}">'
            f'<Relationship Id="{chart_rid}" Type="{REL_CHART}" Target="{xml_escape(chart_target, True)}"/>'
            f"</Relationships>").encode("utf-8")


def _rich_title(text: str, size: int) -> str:
    return (f"<c:title><c:tx><c:rich><a:bodyPr/><a:lstStyle/><a:p><a:pPr><a:defRPr sz=\"{size}\" b=\"1\"/></a:pPr>"
            f'<a:r><a:rPr lang="en-US" sz="{size}" b="1"/><a:t>{plain_text(text)}</a:t></a:r></a:p></c:rich></c:tx>'
            f'<c:overlay val="0"/></c:title>')


def _num_ref(formula: str, values: np.ndarray, fmt: str) -> str:
    pts = [f'<c:pt idx="{i}"><c:v>{format_float(v)}</c:v></c:pt>'
           for i, v in enumerate(values.tolist()) if math.isfinite(v)]
    return (f"<c:numRef><c:f>{xml_escape(formula)}</c:f><c:numCache><c:formatCode>{xml_escape(fmt)}</c:formatCode>"
            f'<c:ptCount val="{len(values)}"/>{"".join(pts)}</c:numCache></c:numRef>')


# A few distinguishable line colours (Office palette) cycled over the series.
_COLOURS = ("4472C4", "ED7D31", "A5A5A5", "FFC000", "5B9BD5", "70AD47", "264478", "9E480E", "636363", "997300")


def chart_xml(sheet: NewSheet, rows: np.ndarray) -> bytes:
    ch = sheet.chart
    assert ch is not None
    n = rows.shape[0]
    q = quote_sheet_always(sheet.name)

    def col_range(c: int) -> str:
        letters = col_letters(c + 1)
        return f"{q}!${letters}$2:${letters}${n + 1}"

    cat_fmt = "0" if integral_column(rows, ch.x_col) else "General"
    cat = f"<c:cat>{_num_ref(col_range(ch.x_col), rows[:, ch.x_col], cat_fmt)}</c:cat>"
    series = []
    for k, c in enumerate(ch.y_cols):
        letters = col_letters(c + 1)
        colour = _COLOURS[k % len(_COLOURS)]
        series.append(
            f'<c:ser><c:idx val="{k}"/><c:order val="{k}"/>'
            f"<c:tx><c:strRef><c:f>{xml_escape(f'{q}!${letters}$1')}</c:f><c:strCache><c:ptCount val=\"1\"/>"
            f'<c:pt idx="0"><c:v>{plain_text(sheet.header[c])}</c:v></c:pt></c:strCache></c:strRef></c:tx>'
            f'<c:spPr><a:ln w="19050" cap="rnd"><a:solidFill><a:srgbClr val="{colour}"/></a:solidFill>'
            f"<a:round/></a:ln></c:spPr>"
            f'<c:marker><c:symbol val="none"/></c:marker>'
            f"{cat}<c:val>{_num_ref(col_range(c), rows[:, c], 'General')}</c:val>"
            f'<c:smooth val="0"/></c:ser>')
    cat_ax, val_ax = 500000001, 500000002
    # about ten labelled ticks on the category axis, however many steps there are
    k = math.ceil(n / 10) if n > 20 else 1
    skip = f'<c:tickLblSkip val="{k}"/><c:tickMarkSkip val="{k}"/>' if k > 1 else ""
    axis_txt = ('<c:txPr><a:bodyPr/><a:lstStyle/><a:p><a:pPr><a:defRPr sz="900"/></a:pPr>'
                '<a:endParaRPr lang="en-US"/></a:p></c:txPr>')
    xml = (f'{XML_DECL}<c:chartSpace xmlns:c="{NS_CHART}" xmlns:a="{NS_A}" xmlns:r="{NS_REL}">'
           f'<c:roundedCorners val="0"/>'
           f"<c:chart>{_rich_title(ch.title, 1400)}<c:autoTitleDeleted val=\"0\"/>"
           f"<c:plotArea><c:layout/>"
           f'<c:lineChart><c:grouping val="standard"/><c:varyColors val="0"/>{"".join(series)}'
           f'<c:marker val="1"/><c:axId val="{cat_ax}"/><c:axId val="{val_ax}"/></c:lineChart>'
           f'<c:catAx><c:axId val="{cat_ax}"/><c:scaling><c:orientation val="minMax"/></c:scaling>'
           f'<c:delete val="0"/><c:axPos val="b"/>{_rich_title(ch.x_title, 1000)}'
           f'<c:numFmt formatCode="{xml_escape(cat_fmt, True)}" sourceLinked="0"/>'
           f'<c:majorTickMark val="out"/><c:minorTickMark val="none"/><c:tickLblPos val="low"/>{axis_txt}'
           f'<c:crossAx val="{val_ax}"/><c:crosses val="autoZero"/><c:auto val="1"/><c:lblAlgn val="ctr"/>'
           f'<c:lblOffset val="100"/>{skip}<c:noMultiLvlLbl val="0"/></c:catAx>'
           f'<c:valAx><c:axId val="{val_ax}"/><c:scaling><c:orientation val="minMax"/></c:scaling>'
           f'<c:delete val="0"/><c:axPos val="l"/><c:majorGridlines/>{_rich_title(ch.y_title, 1000)}'
           f'<c:numFmt formatCode="General" sourceLinked="0"/><c:majorTickMark val="out"/>'
           f'<c:minorTickMark val="none"/><c:tickLblPos val="nextTo"/>{axis_txt}'
           f'<c:crossAx val="{cat_ax}"/><c:crosses val="autoZero"/><c:crossBetween val="between"/></c:valAx>'
           f"</c:plotArea>"
           f'<c:legend><c:legendPos val="b"/><c:overlay val="0"/></c:legend>'
           f'<c:plotVisOnly val="1"/><c:dispBlanksAs val="gap"/></c:chart>'
           f"</c:chartSpace>")
    return xml.encode("utf-8")
