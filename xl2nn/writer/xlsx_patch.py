"""Write values back into a copy of an .xlsx, changing nothing else.

The package is copied member by member; only the worksheets that receive updates and, when
new sheets are appended or a recalculation is requested, the bookkeeping parts (workbook.xml,
its rels, [Content_Types].xml, styles.xml) are rewritten, and those only by splicing text into
the original bytes: no XML tree round trip (which would rename namespace prefixes, reorder
attributes and drop markup Excel needs).
"""
from __future__ import annotations

import math
import numbers
import operator
import os
import posixpath
import re
import shutil
import time
import zipfile
from pathlib import Path
from typing import Mapping, Sequence
from xml.sax.saxutils import unescape

import numpy as np

from ..cells import ERROR_CODES, MAX_COL, MAX_ROW, CellError, CellValue, a1, col_letters, col_number
from ..errors import BadInput
from ..ooxml import (M, NS_MAIN, ZIP_ERRORS, why_unreadable, NS_REL, parse_xml, part_relationships, read_part, rels_path,
                     sheet_parts, workbook_part)
from .atomic import atomic_output
from .columns import CellColumns, cell_keys, splice_numbers
from .trace_sheet import (MAX_CELL_TEXT, XML_DECL, LineChart, NewSheet, cell_text, chart_anchor, chart_xml,
                          drawing_rels_xml, drawing_xml, integral_column, needs_preserve, sheet_rels_xml, sheet_xml,
                          table_of, xml_escape)

__all__ = ["patch_workbook", "CellColumns", "NewSheet", "LineChart"]

CT_WORKSHEET = "application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"
CT_DRAWING = "application/vnd.openxmlformats-officedocument.drawing+xml"
CT_CHART = "application/vnd.openxmlformats-officedocument.drawingml.chart+xml"
CT_STYLES = "application/vnd.openxmlformats-officedocument.spreadsheetml.styles+xml"
CT_RELS = "application/vnd.openxmlformats-package.relationships+xml"
REL_WORKSHEET = NS_REL + "/worksheet"
REL_STYLES = NS_REL + "/styles"

# Rewritten parts larger than this are deflated at level 1 (about 4x faster than the default 6).
FAST_DEFLATE_BYTES = 16 << 20

# Number formats every Excel knows by id (locale-independent ones only).
BUILTIN_NUM_FMTS = {"General": 0, "0": 1, "0.00": 2, "#,##0": 3, "#,##0.00": 4, "0%": 9, "0.00%": 10,
                    "0.00E+00": 11, "@": 49}


# =========================================================================== values

# A validated update value: (kind, XML-ready UTF-8 text, needs xml:space="preserve").
# kind is None (empty the cell), "n" number, "b" bool, "s" string or "e" error.
_Val = tuple

_EMPTY: _Val = (None, b"", False)
_TRUE: _Val = ("b", b"1", False)
_FALSE: _Val = ("b", b"0", False)


def _canon(value: CellValue, sheet: str, row: int, col: int) -> _Val:
    t = type(value)
    if t is float:
        if value - value == 0.0:  # finite
            return ("n", b"%a" % value, False)
    elif t is int:
        return ("n", b"%d" % value, False)
    if value is None:
        return _EMPTY
    if isinstance(value, (bool, np.bool_)):
        return _TRUE if value else _FALSE
    where = f"{sheet}!{a1(row, col)}"
    if isinstance(value, CellError):
        if value.code not in ERROR_CODES:
            raise ValueError(f"{where}: {value.code!r} is not an Excel error value")
        return ("e", xml_escape(value.code).encode(), False)
    if isinstance(value, numbers.Integral):
        return ("n", b"%d" % int(value), False)
    if isinstance(value, numbers.Real):
        x = float(value)
        if not math.isfinite(x):
            raise ValueError(f"{where}: cannot write {x!r}; Excel cells hold finite numbers only")
        return ("n", b"%a" % x, False)
    if isinstance(value, str):
        if len(value) > MAX_CELL_TEXT:
            raise ValueError(f"{where}: text of {len(value):,} characters exceeds Excel's {MAX_CELL_TEXT:,}")
        return ("s", cell_text(value).encode("utf-8"), needs_preserve(value))
    raise ValueError(f"{where}: cannot write a value of type {type(value).__name__}")


def _check_updates(sheet: str, cells: Mapping[tuple[int, int], CellValue]) -> dict[tuple[int, int], _Val]:
    out: dict[tuple[int, int], _Val] = {}
    for key, value in cells.items():
        try:
            r, c = key
            if type(r) is not int or type(c) is not int:
                r, c = operator.index(r), operator.index(c)
            ok = 1 <= r <= MAX_ROW and 1 <= c <= MAX_COL
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ValueError(f"{sheet}: {key!r} is not a (row, col) cell position inside Excel's grid")
        out[(r, c)] = _canon(value, sheet, r, c)
    return out


# t attribute for a formula cell's cached value, and for a constant cell, by kind.
_FORMULA_T = {None: None, "n": None, "b": b"b", "e": b"e", "s": b"str"}
_CONST_T = {None: None, "n": None, "b": b"b", "e": b"e", "s": b"inlineStr"}


# =========================================================================== sheet patching

_ROOT_PREFIX = re.compile(rb"<(?:([A-Za-z_][\w.-]*):)?worksheet[\s/>]")
_R_ATTR = re.compile(rb"""\sr\s*=\s*["']\$?([A-Za-z]{0,3})\$?(\d+)["']""")
_T_ATTR = re.compile(rb"""\st\s*=\s*(?:"[^"]*"|'[^']*')""")
_SPANS_ATTR = re.compile(rb"""(\sspans\s*=\s*["'])([^"']*)(["'])""")
_REF_ATTR = re.compile(rb"""(\sref\s*=\s*["'])([^"']*)(["'])""")
_TRAILING_WS = re.compile(rb"\s*\Z")
_NAME_END = frozenset(b" \t\r\n/>")


def _prefix_of(data: bytes, where: str) -> bytes:
    m = _ROOT_PREFIX.search(data, 0, 1 << 16)
    if not m:
        raise BadInput(f"{where}: not a worksheet part")
    return m.group(1) + b":" if m.group(1) else b""


def _set_t(attrs: bytes, t: bytes | None) -> bytes:
    """Set, replace or remove the t attribute, leaving every other byte of the start tag alone."""
    m = _T_ATTR.search(attrs)
    if m:
        if t is None:
            return attrs[:m.start()] + attrs[m.end():]
        return attrs[:m.start()] + b' t="' + t + b'"' + attrs[m.end():]
    if t is None:
        return attrs
    ws = _TRAILING_WS.search(attrs)
    return attrs[:ws.start()] + b' t="' + t + b'"' + attrs[ws.start():]


def _parse_range(ref: bytes) -> tuple[int, int, int, int] | None:
    m = re.fullmatch(rb"\s*\$?([A-Za-z]{1,3})\$?(\d+)(?::\$?([A-Za-z]{1,3})\$?(\d+))?\s*", ref)
    if not m:
        return None
    r1, c1 = int(m.group(2)), col_number(m.group(1).decode())
    if m.group(3):
        r2, c2 = int(m.group(4)), col_number(m.group(3).decode())
    else:
        r2, c2 = r1, c1
    return min(r1, r2), min(c1, c2), max(r1, r2), max(c1, c2)


class _SheetPatch:
    """One pass over <sheetData>: rows are located with substring searches (rows without
    updates are skipped unparsed); in rows with updates the target cells are rewritten and
    missing cells inserted, everything else is copied as is."""

    def __init__(self, data: bytes, cells: Mapping[tuple[int, int], _Val], where: str):
        self.data = data
        self.where = where
        if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
            raise BadInput(f"{where}: UTF-16 worksheet parts are not supported")
        p = self.p = _prefix_of(data, where)
        ep = re.escape(p)
        # groups: attributes, the <f> element when it is the first child, the children after
        # <f> and a plain <v> (usually none)
        self.cell_re = re.compile(rb"<%sc\b([^>]*?)(?:/>|>(<%sf\b[^>]*?(?:/>|>.*?</%sf>))?"
                                  rb"(?:<%sv>[^<]*</%sv>|<%sv/>)?(.*?)</%sc>)" % (ep, ep, ep, ep, ep, ep, ep), re.S)
        # templates with the prefix baked in (a prefix is an XML name: no '%' in it)
        self.t_formula = b"<" + p + b"c%s>%s<" + p + b"v>%s</" + p + b"v>%s</" + p + b"c>"
        self.t_formula_empty = b"<" + p + b"c%s>%s%s</" + p + b"c>"
        self.t_cell = b"<" + p + b"c%s>%s</" + p + b"c>"
        self.t_value = b"<" + p + b"v>%s</" + p + b"v>"
        self.f_re = re.compile(rb"<%sf\b[^>]*?(?:/>|>.*?</%sf>)" % (ep, ep), re.S)
        self.v_is_re = re.compile(rb"<%s(v|is)\b[^>]*?(?:/>|>.*?</%s\1>)" % (ep, ep), re.S)
        self.ext_re = re.compile(rb"<%sextLst\b" % ep)
        self.rows: dict[int, dict[int, _Val]] = {}
        for (r, c), val in cells.items():
            row = self.rows.get(r)
            if row is None:
                row = self.rows[r] = {}
            row[c] = val
        self.letters: dict[bytes, int] = {}
        self.col_bytes: dict[int, bytes] = {}
        # bounds of inserted cells, to widen <dimension>
        self.ins = [MAX_ROW + 1, MAX_COL + 1, 0, 0]

    # ---- helpers
    def _col_of(self, letters: bytes) -> int:
        c = self.letters.get(letters)
        if c is None:
            c = self.letters[letters] = col_number(letters.decode())
        return c

    def _letters(self, col: int) -> bytes:
        b = self.col_bytes.get(col)
        if b is None:
            b = self.col_bytes[col] = col_letters(col).encode()
        return b

    def _const_body(self, val: _Val) -> bytes:
        kind, text, preserve = val
        if kind is None:
            return b""
        if kind == "s":
            p = self.p
            sp = b' xml:space="preserve"' if preserve else b""
            return b"<%sis><%st%s>%s</%st></%sis>" % (p, p, sp, text, p, p)
        return b"<%sv>%s</%sv>" % (self.p, text, self.p)

    def _new_cell(self, row: int, col: int, val: _Val) -> bytes:
        ins = self.ins
        ins[0], ins[1] = min(ins[0], row), min(ins[1], col)
        ins[2], ins[3] = max(ins[2], row), max(ins[3], col)
        t = _CONST_T[val[0]]
        t = b' t="%s"' % t if t else b""
        return b'<%sc r="%s%d"%s>%s</%sc>' % (self.p, self._letters(col), row, t, self._const_body(val), self.p)

    def _new_row(self, row: int, cols: Mapping[int, _Val]) -> bytes:
        cells = [self._new_cell(row, c, cols[c]) for c in sorted(cols) if cols[c][0] is not None]
        if not cells:
            return b""
        return b'<%srow r="%d">%s</%srow>' % (self.p, row, b"".join(cells), self.p)

    def _rewrite_cell(self, cm: re.Match, val: _Val) -> bytes:
        """The new text of the cell matched by cell_re (groups: attributes, leading <f>, rest)."""
        p = self.p
        attrs, f, rest = cm.group(1, 2, 3)
        kind = val[0]
        if f is None and rest is not None and rest.find(b"<%sf" % p) >= 0:
            fm = self.f_re.search(rest)  # <f> not first: tolerate the odd order
            if fm is not None:
                f, rest = rest[:fm.end()], rest[fm.end():]
        if f is not None:
            # formula cell: keep <f> and everything else, replace only the cached value
            if rest:
                rest = self.v_is_re.sub(b"", rest)
            t = _FORMULA_T[kind]
            if t is not None or b"t=" in attrs:
                attrs = _set_t(attrs, t)
            if kind is None:
                return self.t_formula_empty % (attrs, f, rest)
            return self.t_formula % (attrs, f, val[1], rest)
        body = self.t_value % val[1] if kind == "n" else self._const_body(val)
        if rest:
            em = self.ext_re.search(rest)
            if em:
                body += rest[em.start():]
        t = _CONST_T[kind]
        if t is not None or b"t=" in attrs:
            attrs = _set_t(attrs, t)
        if not body:
            return b"<%sc%s/>" % (p, attrs)
        return self.t_cell % (attrs, body)

    # ---- one row
    def _patch_row(self, whole: bytes, attrs: bytes, content: bytes | None, row: int,
                   cols: dict[int, _Val]) -> bytes:
        p = self.p
        if content is None:
            content = b""
        edits: list[tuple[int, int, bytes]] = []
        # Fast path: every target cell carries its reference first, as Excel, openpyxl and
        # LibreOffice write it, so a substring search finds it without parsing the row.
        row_b = b"%d\"" % row
        prefix = b'<%sc r="' % p
        match = self.cell_re.match
        rewrite = self._rewrite_cell
        for col, val in cols.items():
            pos = content.find(prefix + self._letters(col) + row_b)
            if pos < 0:
                edits = []
                break
            cm = match(content, pos)
            edits.append((pos, cm.end(), rewrite(cm, val)))
        else:
            if len(edits) > 1:
                edits.sort()
            return self._assemble_row(whole, attrs, content, edits, ())
        # General path: walk the row's cells (references may be implicit or elsewhere in the tag).
        wanted = sorted(cols)
        k = 0
        col = 0
        inserted: list[int] = []
        last_end = None
        for cm in self.cell_re.finditer(content):
            last_end = cm.end()
            ra = _R_ATTR.search(cm.group(1))
            col = self._col_of(ra.group(1)) if ra and ra.group(1) else col + 1
            while k < len(wanted) and wanted[k] < col:
                c = wanted[k]
                if cols[c][0] is not None:
                    edits.append((cm.start(), cm.start(), self._new_cell(row, c, cols[c])))
                    inserted.append(c)
                k += 1
            if k < len(wanted) and wanted[k] == col:
                edits.append((cm.start(), cm.end(), rewrite(cm, cols[col])))
                k += 1
        if last_end is None:  # no cells: before a row-level <extLst>, if any
            em = self.ext_re.search(content)
            last_end = em.start() if em else len(content)
        end = last_end
        while k < len(wanted):
            c = wanted[k]
            if cols[c][0] is not None:
                edits.append((end, end, self._new_cell(row, c, cols[c])))
                inserted.append(c)
            k += 1
        return self._assemble_row(whole, attrs, content, edits, inserted)

    def _assemble_row(self, whole: bytes, attrs: bytes, content: bytes, edits, inserted) -> bytes:
        if not edits:
            return whole
        if inserted:
            attrs = self._widen_spans(attrs, min(inserted), max(inserted))
        if len(edits) == 1:
            start, end, text = edits[0]
            body = content[:start] + text + content[end:]
        else:
            out = []
            last = 0
            for start, end, text in edits:
                out.append(content[last:start])
                out.append(text)
                last = end
            out.append(content[last:])
            body = b"".join(out)
        return b"<%srow%s>%s</%srow>" % (self.p, attrs, body, self.p)

    @staticmethod
    def _widen_spans(attrs: bytes, lo: int, hi: int) -> bytes:
        m = _SPANS_ATTR.search(attrs)
        if not m:
            return attrs
        try:
            ranges = [[int(x) for x in part.split(b":")] for part in m.group(2).split()]
            if not ranges or any(len(r) != 2 for r in ranges):
                raise ValueError
        except ValueError:
            return attrs[:m.start()] + attrs[m.end():]  # unreadable optional hint: drop it
        ranges[0][0] = min(ranges[0][0], lo)
        ranges[-1][1] = max(ranges[-1][1], hi)
        text = b" ".join(b"%d:%d" % (a, b) for a, b in ranges)
        return attrs[:m.start(2)] + text + attrs[m.end(2):]

    # ---- whole sheet
    def run(self) -> bytes:
        data, p = self.data, self.p
        sm = re.search(rb"<%ssheetData\b[^>]*?(/?)>" % re.escape(p), data)
        if not sm:
            raise BadInput(f"{self.where}: the worksheet has no <sheetData>")
        wanted_rows = sorted(self.rows)
        pieces: list[bytes] = []
        if sm.group(1):  # <sheetData/>: nothing to patch, everything to insert
            body = b"".join(self._new_row(r, self.rows[r]) for r in wanted_rows)
            if not body:
                return data
            pieces = [data[:sm.start()], b"<%ssheetData>" % p, body, b"</%ssheetData>" % p]
            last = sm.end()
        else:
            body_start = sm.end()
            body_end = data.find(b"</%ssheetData>" % p, body_start)
            if body_end < 0:
                raise BadInput(f"{self.where}: <sheetData> is not closed")
            last = body_start
            pieces.append(data[:body_start])
            open_tag = b"<%srow" % p
            close_tag = b"</%srow>" % p
            n_open = len(open_tag)
            find = data.find
            r_search = _R_ATTR.search
            rows = self.rows
            k = 0
            n_wanted = len(wanted_rows)
            row = 0
            pos = body_start
            while k < n_wanted:
                s = find(open_tag, pos, body_end)
                if s < 0:
                    break
                if data[s + n_open] not in _NAME_END:  # e.g. <rowFoo
                    pos = s + n_open
                    continue
                gt = find(b">", s, body_end)
                if gt < 0:
                    raise BadInput(f"{self.where}: unterminated <row> tag")
                self_closing = data[gt - 1] == 0x2F  # "/"
                attrs = data[s + n_open:gt - 1 if self_closing else gt]
                ra = r_search(attrs)
                row = int(ra.group(2)) if ra else row + 1
                pos = gt + 1
                if wanted_rows[k] > row:
                    continue
                while k < n_wanted and wanted_rows[k] < row:
                    new = self._new_row(wanted_rows[k], rows[wanted_rows[k]])
                    if new:
                        pieces.append(data[last:s])
                        pieces.append(new)
                        last = s
                    k += 1
                if k < n_wanted and wanted_rows[k] == row:
                    if self_closing:
                        end, content = gt + 1, None
                    else:
                        ce = find(close_tag, gt, body_end)
                        if ce < 0:
                            raise BadInput(f"{self.where}: row {row} is not closed")
                        end, content = ce + len(close_tag), data[gt + 1:ce]
                    new = self._patch_row(data[s:end], attrs, content, row, rows[row])
                    pieces.append(data[last:s])
                    pieces.append(new)
                    last = pos = end
                    k += 1
            tail = b"".join(self._new_row(r, rows[r]) for r in wanted_rows[k:])
            if tail:
                pieces.append(data[last:body_end])
                pieces.append(tail)
                last = body_end
        pieces.append(data[last:])
        # widen <dimension ref> (it precedes sheetData, so it lives in pieces[0])
        if self.ins[2]:
            pieces[0] = self._widen_dimension(pieces[0])
        return b"".join(pieces)

    def _widen_dimension(self, head: bytes) -> bytes:
        dm = re.search(rb"<%sdimension\b([^>]*?)/?>" % re.escape(self.p), head)
        if not dm:
            return head
        am = _REF_ATTR.search(dm.group(1))
        if not am:
            return head
        r1, c1, r2, c2 = self.ins
        old = _parse_range(am.group(2))
        if old is not None:
            r1, c1 = min(r1, old[0]), min(c1, old[1])
            r2, c2 = max(r2, old[2]), max(c2, old[3])
            if old == (r1, c1, r2, c2):
                return head
        ref = a1(r1, c1) if (r1, c1) == (r2, c2) else f"{a1(r1, c1)}:{a1(r2, c2)}"
        start = dm.start(1) + am.start(2)
        end = dm.start(1) + am.end(2)
        return head[:start] + ref.encode() + head[end:]


def patch_sheet_xml(data: bytes, cells: Mapping[tuple[int, int], CellValue], where: str = "sheet") -> bytes:
    """The worksheet XML with `cells` ((row, col) -> value) written; see patch_workbook."""
    return _SheetPatch(data, _check_updates(where, cells), where).run()


# =========================================================================== bookkeeping parts

def _root_prefix(text: str, local: str) -> str:
    m = re.search(r"<(?:([A-Za-z_][\w.-]*):)?%s[\s/>]" % local, text)
    return m.group(1) + ":" if m and m.group(1) else ""


def _rel_prefix(text: str, root_local: str) -> str | None:
    """The prefix bound to the relationships namespace on the root element, if any."""
    m = re.search(r"<(?:[\w.-]+:)?%s\b[^>]*>" % root_local, text)
    if not m:
        return None
    pm = re.search(r"""xmlns:([\w.-]+)\s*=\s*["']%s["']""" % re.escape(NS_REL), m.group(0))
    return pm.group(1) if pm else None


def _set_attr(tag: str, name: str, value: str) -> str:
    """Set attribute `name` in the start tag text `tag` (e.g. '<calcPr calcId="1"/>')."""
    m = re.search(r"""(\s%s\s*=\s*)(?:"[^"]*"|'[^']*')""" % re.escape(name), tag)
    if m:
        return tag[:m.start()] + f' {name}="{value}"' + tag[m.end():]
    end = len(tag) - (2 if tag.endswith("/>") else 1)
    while end > 0 and tag[end - 1].isspace():
        end -= 1
    return tag[:end] + f' {name}="{value}"' + tag[end:]


def _insert_before_close(text: str, close: str, snippet: str, where: str) -> str:
    pos = text.rfind(close)
    if pos < 0:
        raise BadInput(f"{where}: {close} not found")
    return text[:pos] + snippet + text[pos:]


# Children of <workbook> that come after <calcPr>, in schema order.
_AFTER_CALCPR = ("oleSize", "customWorkbookViews", "pivotCaches", "smartTagPr", "smartTagTypes",
                 "webPublishing", "fileRecoveryPr", "webPublishObjects", "extLst")


def _set_full_calc_on_load(wb: str, where: str) -> str:
    p = _root_prefix(wb, "workbook")
    ep = re.escape(p)
    m = re.search(r"<%scalcPr\b[^>]*?/?>" % ep, wb)
    if m:
        return wb[:m.start()] + _set_attr(m.group(0), "fullCalcOnLoad", "1") + wb[m.end():]
    snippet = f'<{p}calcPr fullCalcOnLoad="1"/>'
    positions = [mm.start() for name in _AFTER_CALCPR
                 for mm in [re.search(r"<%s%s\b" % (ep, name), wb)] if mm]
    if positions:
        pos = min(positions)
        return wb[:pos] + snippet + wb[pos:]
    return _insert_before_close(wb, f"</{p}workbook>", snippet, where)


def _set_count(text: str, start: int, end: int, n: int) -> str:
    """Set count="n" on the start tag text[start:end]."""
    return text[:start] + _set_attr(text[start:end], "count", str(n)) + text[end:]


class _Styles:
    """Appends number formats, a bold font and cell formats to styles.xml, by text splicing."""

    def __init__(self, text: str, where: str):
        self.text = text
        self.where = where
        self.p = _root_prefix(text, "styleSheet")
        self.cache: dict[tuple, int] = {}

    def _block(self, name: str) -> re.Match | None:
        ep = re.escape(self.p)
        return re.search(r"<%s%s\b([^>]*?)(?:/>|>(.*?)</%s%s>)" % (ep, name, ep, name), self.text, re.S)

    def _append_child(self, block: str, child_tag: str, snippet: str, before: tuple[str, ...] = ()) -> int:
        """Append `snippet` as the last child of <block>, update count, return the new child's index."""
        p = self.p
        ep = re.escape(p)
        m = self._block(block)
        if m is None:
            new = f'<{p}{block} count="1">{snippet}</{p}{block}>'
            pos = None
            for name in before:
                mm = re.search(r"<%s%s\b" % (ep, name), self.text)
                if mm:
                    pos = mm.start()
                    break
            if pos is None:
                raise BadInput(f"{self.where}: styles part has no <{block}> and no place to add one")
            self.text = self.text[:pos] + new + self.text[pos:]
            return 0
        inner = m.group(2) or ""
        n = len(re.findall(r"<%s%s\b" % (ep, child_tag), inner))
        start_tag_end = m.start(2) if m.group(2) is not None else None
        if start_tag_end is None:  # self-closing <block .../>
            tag = self.text[m.start():m.end()]
            tag = tag[:-2].rstrip() + ">"
            new = _set_attr(tag, "count", str(n + 1)) + snippet + f"</{p}{block}>"
            self.text = self.text[:m.start()] + new + self.text[m.end():]
            return n
        close = m.end(2)
        self.text = self.text[:close] + snippet + self.text[close:]
        self.text = _set_count(self.text, m.start(), m.start(2), n + 1)
        return n

    def num_fmt_id(self, code: str) -> int:
        if code in BUILTIN_NUM_FMTS:
            return BUILTIN_NUM_FMTS[code]
        key = ("fmt", code)
        if key in self.cache:
            return self.cache[key]
        ep = re.escape(self.p)
        m = self._block("numFmts")
        used = []
        if m is not None and m.group(2):
            for nm in re.finditer(r"<%snumFmt\b([^>]*)>" % ep, m.group(2)):
                idm = re.search(r"""numFmtId\s*=\s*["'](\d+)["']""", nm.group(1))
                cm = re.search(r"""formatCode\s*=\s*(?:"([^"]*)"|'([^']*)')""", nm.group(1))
                if not idm:
                    continue
                used.append(int(idm.group(1)))
                if cm and unescape(cm.group(1) or cm.group(2) or "", {"&quot;": '"', "&apos;": "'"}) == code:
                    self.cache[key] = int(idm.group(1))
                    return int(idm.group(1))
        new_id = max([163, *used]) + 1
        snippet = f'<{self.p}numFmt numFmtId="{new_id}" formatCode="{xml_escape(code, True)}"/>'
        if m is None:
            # numFmts is the first child of styleSheet
            rm = re.search(r"<%sstyleSheet\b[^>]*>" % ep, self.text)
            if rm is None:
                raise BadInput(f"{self.where}: styles part has no <styleSheet>")
            self.text = (self.text[:rm.end()] + f'<{self.p}numFmts count="1">{snippet}</{self.p}numFmts>'
                         + self.text[rm.end():])
        else:
            self._append_child("numFmts", "numFmt", snippet)
        self.cache[key] = new_id
        return new_id

    def bold_font_id(self) -> int:
        key = ("bold",)
        if key in self.cache:
            return self.cache[key]
        ep = re.escape(self.p)
        m = self._block("fonts")
        first = None
        if m is not None and m.group(2):
            first = re.search(r"<%sfont\b[^>]*?(?:/>|>.*?</%sfont>)" % (ep, ep), m.group(2), re.S)
        if first is None:
            font = f"<{self.p}font><{self.p}b/></{self.p}font>"
        else:
            f = first.group(0)
            f = re.sub(r"<%sb\b[^>]*?(?:/>|>\s*</%sb>)" % (ep, ep), "", f)
            if f.endswith("/>"):
                f = f[:-2].rstrip() + f"><{self.p}b/></{self.p}font>"
            else:
                gt = f.index(">") + 1
                f = f[:gt] + f"<{self.p}b/>" + f[gt:]
            font = f
        fid = self._append_child("fonts", "font", font, before=("fills", "borders", "cellStyleXfs", "cellXfs"))
        self.cache[key] = fid
        return fid

    def xf(self, num_fmt_id: int, font_id: int = 0) -> int:
        key = ("xf", num_fmt_id, font_id)
        if key in self.cache:
            return self.cache[key]
        has_style_xfs = self._block("cellStyleXfs") is not None
        extra = ' applyNumberFormat="1"' if num_fmt_id else ""
        if font_id:
            extra += ' applyFont="1"'
        xf_id = ' xfId="0"' if has_style_xfs else ""
        snippet = (f'<{self.p}xf numFmtId="{num_fmt_id}" fontId="{font_id}" fillId="0" borderId="0"'
                   f"{xf_id}{extra}/>")
        idx = self._append_child("cellXfs", "xf", snippet, before=("cellStyles", "dxfs", "tableStyles", "colors",
                                                                  "extLst"))
        self.cache[key] = idx
        return idx


MINIMAL_STYLES = (f'{XML_DECL}<styleSheet xmlns="{NS_MAIN}"><fonts count="1"><font><sz val="11"/>'
                  '<name val="Calibri"/><family val="2"/></font></fonts><fills count="2"><fill>'
                  '<patternFill patternType="none"/></fill><fill><patternFill patternType="gray125"/></fill></fills>'
                  '<borders count="1"><border><left/><right/><top/><bottom/><diagonal/></border></borders>'
                  '<cellStyleXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0"/></cellStyleXfs>'
                  '<cellXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0" xfId="0"/></cellXfs>'
                  '<cellStyles count="1"><cellStyle name="Normal" xfId="0" builtinId="0"/></cellStyles>'
                  "</styleSheet>")


class _Package:
    """The source package plus the parts we replace or add."""

    def __init__(self, zf: zipfile.ZipFile, label: str):
        self.zf = zf
        self.label = label
        self.names = zf.namelist()
        self.replaced: dict[str, bytes] = {}
        self.added: dict[str, bytes] = {}
        self.taken = {n.lower() for n in self.names}

    def get_text(self, path: str) -> str:
        if path in self.replaced:
            return self.replaced[path].decode("utf-8")
        if path in self.added:
            return self.added[path].decode("utf-8")
        data = read_part(self.zf, path, self.label)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise BadInput(f"{self.label}: part {path} is not UTF-8; cannot edit it") from None

    def put(self, path: str, data: bytes | str) -> None:
        if isinstance(data, str):
            data = data.encode("utf-8")
        if path in self.names:
            self.replaced[path] = data
        else:
            self.added[path] = data
            self.taken.add(path.lower())

    def exists(self, path: str) -> bool:
        return path in self.names or path in self.added

    def fresh(self, pattern: str) -> tuple[int, str]:
        """The smallest N >= 1 such that pattern % N names no part (nor content-type override)."""
        n = 1
        while (pattern % n).lower() in self.taken:
            n += 1
        path = pattern % n
        self.taken.add(path.lower())
        return n, path


def _fresh_rid(rels_text: str) -> str:
    ids = set(re.findall(r"""\sId\s*=\s*["']([^"']*)["']""", rels_text))
    nums = [int(m.group(1)) for i in ids for m in [re.fullmatch(r"rId(\d+)", i)] if m]
    n = max(nums, default=0) + 1
    while f"rId{n}" in ids:
        n += 1
    return f"rId{n}"


def _relative(from_part: str, to_part: str) -> str:
    return posixpath.relpath(to_part, posixpath.dirname(from_part) or ".")


def _add_relationship(pkg: _Package, owner: str, rel_type: str, target_part: str) -> str:
    path = rels_path(owner)
    if pkg.exists(path):
        text = pkg.get_text(path)
    else:
        text = f'{XML_DECL}<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">' \
               f"</Relationships>"
    rid = _fresh_rid(text)
    p = _root_prefix(text, "Relationships")
    snippet = (f'<{p}Relationship Id="{rid}" Type="{rel_type}" '
               f'Target="{xml_escape(_relative(owner, target_part), True)}"/>')
    if re.search(r"<%sRelationships\b[^>]*/>" % re.escape(p), text):
        text = re.sub(r"<(%sRelationships\b[^>]*?)\s*/>" % re.escape(p),
                      lambda m: f"<{m.group(1)}>{snippet}</{p}Relationships>", text, count=1)
    else:
        text = _insert_before_close(text, f"</{p}Relationships>", snippet, f"{pkg.label}: {path}")
    pkg.put(path, text)
    return rid


def _add_overrides(pkg: _Package, overrides: list[tuple[str, str]]) -> None:
    path = "[Content_Types].xml"
    text = pkg.get_text(path)
    p = _root_prefix(text, "Types")
    snippet = "".join(f'<{p}Override PartName="/{xml_escape(part, True)}" ContentType="{ct}"/>'
                      for part, ct in overrides)
    if not re.search(r"""<%sDefault\b[^>]*Extension\s*=\s*["']rels["']""" % re.escape(p), text, re.I):
        snippet = f'<{p}Default Extension="rels" ContentType="{CT_RELS}"/>' + snippet
    text = _insert_before_close(text, f"</{p}Types>", snippet, f"{pkg.label}: {path}")
    pkg.put(path, text)


def _override_names(pkg: _Package) -> set[str]:
    text = pkg.get_text("[Content_Types].xml")
    return {m.group(1).lstrip("/").lower()
            for m in re.finditer(r"""PartName\s*=\s*["']([^"']*)["']""", text)}


def _add_new_sheets(pkg: _Package, new_sheets: Sequence[NewSheet]) -> None:
    label = pkg.label
    wb_path = workbook_part(pkg.zf, label)
    wb_dir = posixpath.dirname(wb_path)
    root = parse_xml(pkg.get_text(wb_path).encode("utf-8"), label, wb_path)
    sheets_el = root.find(M + "sheets")
    existing = [el.get("name", "") for el in (sheets_el if sheets_el is not None else [])]
    sheet_ids = [int(el.get("sheetId")) for el in (sheets_el if sheets_el is not None else [])
                 if (el.get("sheetId") or "").isdigit()]
    taken_names = {n.lower() for n in existing}
    pkg.taken |= _override_names(pkg)

    tables = []
    for ns in new_sheets:
        rows = table_of(ns)
        if ns.name.lower() in taken_names:
            raise BadInput(f"{label}: the workbook already has a sheet named {ns.name!r}")
        taken_names.add(ns.name.lower())
        tables.append(rows)

    # styles
    rels = part_relationships(pkg.zf, wb_path, label)
    styles_path = next((t for typ, t in rels.values() if typ.endswith("/styles")), None)
    overrides: list[tuple[str, str]] = []
    if styles_path is None or not pkg.exists(styles_path):
        styles_path = styles_path or posixpath.join(wb_dir, "styles.xml")
        if styles_path.lower() in pkg.taken and not pkg.exists(styles_path):
            _, styles_path = pkg.fresh(posixpath.join(wb_dir, "styles%d.xml"))
        pkg.put(styles_path, MINIMAL_STYLES)
        _add_relationship(pkg, wb_path, REL_STYLES, styles_path)
        overrides.append((styles_path, CT_STYLES))
    styles = _Styles(pkg.get_text(styles_path), f"{label}: {styles_path}")

    wb = pkg.get_text(wb_path)
    wp = _root_prefix(wb, "workbook")
    rp = _rel_prefix(wb, "workbook")
    next_sheet_id = max(sheet_ids, default=0) + 1
    for ns, rows in zip(new_sheets, tables):
        fmt_id = styles.num_fmt_id(ns.number_format)
        data_style = styles.xf(fmt_id)
        first_style = styles.xf(1) if integral_column(rows, 0) else data_style
        header_style = styles.xf(0, styles.bold_font_id())

        _, sheet_path = pkg.fresh(posixpath.join(wb_dir, "worksheets", "sheet%d.xml"))
        overrides.append((sheet_path, CT_WORKSHEET))
        drawing_rid = None
        if ns.chart is not None and rows.shape[0] > 0:
            n_d, drawing_path = pkg.fresh(posixpath.join(wb_dir, "drawings", "drawing%d.xml"))
            _, chart_path = pkg.fresh(posixpath.join(wb_dir, "charts", "chart%d.xml"))
            drawing_rid = "rId1"
            col0, row0 = chart_anchor(ns)
            pkg.put(drawing_path, drawing_xml(col0, row0, "rId1", "Chart 1"))
            pkg.put(rels_path(drawing_path), drawing_rels_xml("rId1", _relative(drawing_path, chart_path)))
            pkg.put(chart_path, chart_xml(ns, rows))
            pkg.put(rels_path(sheet_path), sheet_rels_xml(drawing_rid, _relative(sheet_path, drawing_path)))
            overrides += [(drawing_path, CT_DRAWING), (chart_path, CT_CHART)]
        pkg.put(sheet_path, sheet_xml(ns, rows, header_style=header_style, data_style=data_style,
                                      first_col_style=first_style, drawing_rid=drawing_rid))

        rid = _add_relationship(pkg, wb_path, REL_WORKSHEET, sheet_path)
        if rp:
            rid_attr = f'{rp}:id="{rid}"'
        else:
            rid_attr = f'xmlns:r="{NS_REL}" r:id="{rid}"'
        wb = _insert_before_close(wb, f"</{wp}sheets>",
                                  f'<{wp}sheet name="{xml_escape(ns.name, True)}" sheetId="{next_sheet_id}" '
                                  f"{rid_attr}/>", f"{label}: {wb_path}")
        next_sheet_id += 1
    pkg.put(wb_path, wb)
    pkg.put(styles_path, styles.text)
    _add_overrides(pkg, overrides)


# =========================================================================== zip output

def _clone_info(info: zipfile.ZipInfo) -> zipfile.ZipInfo:
    zi = zipfile.ZipInfo(info.filename, info.date_time)
    zi.compress_type = info.compress_type
    zi.comment = info.comment
    zi.create_system = info.create_system
    zi.external_attr = info.external_attr
    return zi


def _write_package(zf: zipfile.ZipFile, tmp_fh, replaced: Mapping[str, bytes], added: Mapping[str, bytes]) -> None:
    with zipfile.ZipFile(tmp_fh, "w", allowZip64=True) as out:
        out.comment = zf.comment
        for info in zf.infolist():
            zi = _clone_info(info)
            if info.filename in replaced:
                data = replaced[info.filename]
                # Fast deflate for very large rewritten parts: level 6 would dominate the run time.
                level = 1 if len(data) > FAST_DEFLATE_BYTES else None
                out.writestr(zi, data, compresslevel=level)
                continue
            if info.is_dir():
                out.writestr(zi, b"")
                continue
            with zf.open(info) as src, out.open(zi, "w", force_zip64=info.file_size > 0x7FFFFFFF) as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        now = time.localtime()[:6]
        for name, data in added.items():
            zi = zipfile.ZipInfo(name, now)
            zi.compress_type = zipfile.ZIP_DEFLATED
            zi.external_attr = 0o600 << 16
            out.writestr(zi, data)


def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _splice_columns(data: bytes, columns: CellColumns, vals: dict[tuple[int, int], _Val], sheet: str,
                    spans=None) -> tuple[bytes, dict[tuple[int, int], _Val]]:
    """The numbers of `columns` spliced into the part at once; returns the part and what is
    left for the cell-by-cell patcher (`vals`, plus the numbers the splice could not place)."""
    rows, cols, numbers = columns.rows, columns.cols, columns.numbers
    if vals:
        given = np.array(list(vals), np.int64).reshape(-1, 2)      # the few cells set one by one win
        taken = np.isin(cell_keys(rows, cols), cell_keys(given[:, 0], given[:, 1]))
        rows, cols, numbers = rows[~taken], cols[~taken], numbers[~taken]
    done = splice_numbers(data, rows, cols, numbers, spans)
    if done is None:
        left = np.ones(len(rows), bool)
    else:
        data, left = done
    rest = dict(zip(zip(rows[left].tolist(), cols[left].tolist()), numbers[left].tolist()))
    return data, {**_check_updates(sheet, rest), **vals}


def patch_workbook(src: Path, dst: Path, updates: Mapping[str, Mapping[tuple[int, int], CellValue] | CellColumns], *,
                   new_sheets: Sequence[NewSheet] = (), recalc_on_open: bool = False,
                   spans: Mapping[str, tuple] | None = None) -> None:
    """Copy the workbook `src` to `dst` with cell values replaced and sheets appended.

    updates: sheet name -> {(row, col) 1-based: value}, or a CellColumns of numbers (spliced in
    all at once). A formula cell keeps its formula and only gets a new cached value; any other
    cell gets the value itself (None empties it).
    new_sheets: worksheets appended after the existing ones (see trace_sheet.NewSheet).
    recalc_on_open: ask the spreadsheet application to recalculate everything on open.
    spans: sheet name -> Sheet.spans from the reader, which saves scanning those parts again.

    All other parts of the package are copied unchanged. dst is written atomically: a temp
    file in dst's folder is fsynced and renamed; on error it is removed and dst not created.
    """
    src, dst = Path(src), Path(dst)
    if _same_file(src, dst):
        raise ValueError(f"destination {dst} is the source workbook; write to another file")
    label = str(src)

    # Validate every value before touching anything (column updates: their other values).
    checked = {sheet: _check_updates(sheet, cells.other if isinstance(cells, CellColumns) else cells)
               for sheet, cells in updates.items()}
    new_sheets = list(new_sheets)
    for ns in new_sheets:
        table_of(ns)

    try:
        zf = zipfile.ZipFile(src)
    except ZIP_ERRORS:
        raise BadInput(f"{label}: not an xlsx file (not a readable zip archive)") from None
    except FileNotFoundError:
        raise BadInput(f"{label}: no such file") from None
    with zf:
        pkg = _Package(zf, label)
        parts = sheet_parts(zf, label)
        by_name = {s.name: s for s in parts}
        by_lower = {s.name.lower(): s for s in parts}
        for sheet, vals in checked.items():
            sp = by_name.get(sheet) or by_lower.get(sheet.lower())
            if sp is None:
                names = ", ".join(repr(s.name) for s in parts)
                raise BadInput(f"{label}: no worksheet named {sheet!r} (worksheets: {names})")
            columns = updates[sheet]
            if not vals and not (isinstance(columns, CellColumns) and len(columns.rows)):
                continue
            fresh = sp.path not in pkg.replaced
            data = pkg.replaced.get(sp.path) or read_part(zf, sp.path, label)
            if isinstance(columns, CellColumns) and len(columns.rows):
                # the reader's layout of this part, if it is of these very bytes
                known = (spans or {}).get(sp.name)
                info = zf.getinfo(sp.path)
                layout = known[1] if fresh and known and known[0] == (info.CRC, info.file_size) else None
                data, vals = _splice_columns(data, columns, vals, sheet, layout)
            if vals:
                data = _SheetPatch(data, vals, f"{label}: sheet {sp.name!r}").run()
            pkg.put(sp.path, data)
        if new_sheets:
            _add_new_sheets(pkg, new_sheets)
        if recalc_on_open:
            wb_path = workbook_part(zf, label)
            pkg.put(wb_path, _set_full_calc_on_load(pkg.get_text(wb_path), f"{label}: {wb_path}"))

        with atomic_output(dst) as fh:
            try:
                _write_package(zf, fh, pkg.replaced, pkg.added)
            except ZIP_ERRORS as exc:
                raise BadInput(f"{label}: cannot copy the workbook: {why_unreadable(exc)}") from None


