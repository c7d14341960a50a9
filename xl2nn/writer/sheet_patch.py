"""Validate cell values and splice them into worksheet XML, byte for byte."""
from __future__ import annotations

import math
import numbers
import operator
import re
from typing import Mapping

import numpy as np

from ..cells import ERROR_CODES, MAX_COL, MAX_ROW, CellError, CellValue, OverFormula, a1, col_letters, col_number
from ..errors import BadInput
from .trace_sheet import MAX_CELL_TEXT, cell_text, needs_preserve, xml_escape


# =========================================================================== values

# A validated update value: (kind, XML-ready UTF-8 text, needs xml:space="preserve"), and a
# fourth entry True for a number written over the cell's formula (OverFormula).
# kind is None (empty the cell), "n" number, "b" bool, "s" string or "e" error.
_Val = tuple

_EMPTY: _Val = (None, b"", False)
_TRUE: _Val = ("b", b"1", False)
_FALSE: _Val = ("b", b"0", False)


def _canon(value: CellValue, sheet: str, row: int, col: int) -> _Val:
    t = type(value)
    if t is OverFormula:
        if not math.isfinite(value):
            raise ValueError(f"{sheet}!{a1(row, col)}: cannot write {float(value)!r}; Excel cells hold finite numbers only")
        return ("n", b"%a" % float(value), False, True)
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
_CM_ATTR = re.compile(rb"""\scm\s*=\s*(?:"[^"]*"|'[^']*')""")
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
        if f is not None and len(val) > 3:
            # a number over the formula: the cell becomes a constant (no <f>, no array metadata)
            self._check_droppable(f, cm)
            f = None
            attrs = _CM_ATTR.sub(b"", attrs)
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

    def _check_droppable(self, f: bytes, cm: re.Match) -> None:
        """A shared formula's master or an array formula carries the formula of other cells:
        it may be dropped only with all of them."""
        ref = _REF_ATTR.search(f[:f.find(b">") + 1])
        if ref is None:
            return
        box = _parse_range(ref.group(2))
        if box is None:
            return
        r1, c1, r2, c2 = box
        dropped = all(len(self.rows.get(r, {}).get(c, ())) > 3 for r in range(r1, r2 + 1) for c in range(c1, c2 + 1))
        if not dropped:
            cell = _R_ATTR.search(cm.group(1))
            name = (cell.group(1) + cell.group(2)).decode() if cell else "a cell"
            raise BadInput(f"{self.where}: {name} holds the formula written for {ref.group(2).decode()} (a shared or "
                           "array formula) beyond the cells to overwrite; cannot replace it alone")

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
