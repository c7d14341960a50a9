"""Read a worksheet's <sheetData> with NumPy instead of an XML parser.

An XML parser costs a Python call per element: 4 million of them for a 100,000-row
sheet. The cells Excel, LibreOffice and openpyxl write have one plain form
(`<c r="B7" s="1" t="s"><f ...>..</f><v>..</v></c>`), so the tags can be found by
byte position, all at once: '<' positions, classified by the bytes after them, then
matched to their cell with searchsorted. Numbers are parsed by NumPy in one call, and
formula texts copied down a column are recognised as copies in bulk (copies.py). Only
strings, lone formulas and the rare oddity are handled one by one.

Anything outside that form (namespace prefixes, cells without `r`, comments, CDATA,
unknown entities, a malformed tag) makes `scan` return None before it changes anything,
and the caller falls back to the XML parser, which reads any well-formed sheet and words
the errors.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from ..cells import MAX_COL, MAX_ROW, CellError, CellValue
from ..ooxml import NS_MAIN
from .copies import copied_runs

_LT, _GT, _SLASH, _QUOTE, _SPACE = 60, 62, 47, 34, 32
_CHILD = np.frombuffer(b'<f t="shared" si="', np.uint8)
_ATTR = re.compile(r'([\w:]+)="([^"]*)"')
_ATTRS = re.compile(r'(?: [\w:]+="[^"]*")*\s*')
_ENTITY = re.compile(r"&(lt|gt|amp|quot|apos|#[0-9]+|#x[0-9a-fA-F]+);")
_NAMED = {"lt": "<", "gt": ">", "amp": "&", "quot": '"', "apos": "'"}
_INLINE_T = re.compile(rb"<t(?:\s[^>]*)?>([^<]*)</t>")
_PHONETIC = re.compile(rb"<rPh\b.*?</rPh>", re.S)
_CM = re.compile(rb' cm="([0-9]+)"')
# How formulas without a t="..." open, by writer: plain (openpyxl, XlsxWriter), with
# LibreOffice's aca, or Excel's ca (calculate always). None of them changes what the text means.
_PLAIN_F = [np.frombuffer(p, np.uint8) for p in
            (b"<f>", b'<f aca="false">', b'<f aca="true">', b'<f ca="1">', b'<f ca="true">', b'<f ca="0">',
             b'<f ca="false">')]


class Unusual(Exception):
    """The sheet is not in the plain form: read it with the XML parser instead."""


@dataclass
class Scanned:
    rows: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))      # numeric cells
    cols: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    numbers: np.ndarray = field(default_factory=lambda: np.empty(0))
    other: dict[tuple[int, int], CellValue] = field(default_factory=dict)        # text, bool, error
    # formulas with text or attributes other than a plain shared child: (pos, attrs, text or None)
    formulas: list[tuple[tuple[int, int], dict[str, str], str | None]] = field(default_factory=list)
    # texts copied down a column, one per cell in the part: (text, its cell, rows, cols of the
    # cells holding it moved), to be stored as a shared formula
    copies: list[tuple[str, tuple[int, int], np.ndarray, np.ndarray]] = field(default_factory=list)
    child_rows: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))  # <f t="shared" si="k"/>
    child_cols: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    child_si: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    max_row: int = 0
    max_col: int = 0
    spans: "ValueSpans | None" = None     # where the values sit, for the writer


@dataclass
class ValueSpans:
    """Each cell's position and type, and where its cached value's text sits in the part:
    what the writer needs to splice new values in without scanning the part again."""

    rows: np.ndarray
    cols: np.ndarray
    kind: np.ndarray        # t="..." first letter ('S' for str), 'n' when absent
    vo: np.ndarray          # each value element's '<' (also of an empty <v/> or <v />) ...
    ve: np.ndarray          # ... where its text ends (its '</v>'s '<'; vo + 3 when empty)
    vci: np.ndarray         # ... and the index of its cell
    close: np.ndarray       # each cell's '</c>' ('<'); -1 for a self-closing <c .../>


def unescape(text: str) -> str:
    if "&" not in text:
        return text

    def one(m: re.Match) -> str:
        e = m.group(1)
        if e in _NAMED:
            return _NAMED[e]
        return chr(int(e[2:], 16) if e[1] == "x" else int(e[1:]))
    out = _ENTITY.sub(one, text)
    if "&" in _ENTITY.sub("", text):
        raise Unusual("an entity the fast reader does not know")
    return out


def _window(a: np.ndarray, starts: np.ndarray, width: int) -> np.ndarray:
    return np.lib.stride_tricks.sliding_window_view(a, width)[np.minimum(starts, len(a) - width)]


def _digits(a: np.ndarray, starts: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The decimal number starting at each of `starts`, and how many digits it has
    (one column at a time: Horner's rule, vectorised over the cells)."""
    value = np.zeros(len(starts), np.int64)
    count = np.zeros(len(starts), np.int64)
    running = np.ones(len(starts), bool)
    last = len(a) - 1
    for j in range(width):
        b = np.take(a, np.minimum(starts + j, last))
        running &= (b >= 48) & (b <= 57)
        if not running.any():
            break
        value = np.where(running, value * 10 + (b.astype(np.int64) - 48), value)
        count += running
    return value, count


def _numbers(w: np.ndarray) -> np.ndarray:
    """The numbers written in the rows of `w` (zero-padded bytes), exactly as float() reads them.

    NumPy's text-to-float cast costs ~250 ns a number whatever its length. Plain decimals
    with at most 15 digits are read here instead, by Horner's rule over the columns:
    mantissa / 10**decimals is then exactly float()'s correctly rounded result (both are
    exact doubles, and one IEEE division rounds once). The rest go to NumPy.
    """
    n, width = w.shape
    cols = np.ascontiguousarray(w.T)
    mant = np.zeros(n, np.int64)
    digits = np.zeros(n, np.int8)
    decimals = np.zeros(n, np.int8)
    dots = np.zeros(n, np.int8)
    others = np.zeros(n, np.int8)
    neg = cols[0] == ord("-")
    is_digit = np.empty(n, bool)
    for j in range(width):
        c = cols[j]
        np.less_equal(c - np.uint8(48), 9, out=is_digit)        # wraps below '0'
        is_dot = c == ord(".")
        others += ~(is_digit | is_dot | (c == 0))
        # in place, only where a digit is: no temporaries on the hot path
        np.multiply(mant, 10, out=mant, where=is_digit)
        np.add(mant, c, out=mant, where=is_digit, casting="unsafe")
        np.subtract(mant, 48, out=mant, where=is_digit)
        digits += is_digit
        decimals += is_digit & (dots > 0)
        dots += is_dot
    ok = (others == neg) & (dots <= 1) & (digits >= 1) & (digits <= 15)
    out = np.empty(n)
    out[ok] = np.where(neg[ok], -1.0, 1.0) * (mant[ok] / 10.0 ** decimals[ok])
    rest = ~ok
    if rest.any():
        out[rest] = np.ascontiguousarray(w[rest]).view(f"S{width}").reshape(-1).astype(np.float64)
    return out


def _cell_refs(a: np.ndarray, cs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row and column of each `<c r="LETTERSdigits"`."""
    col = np.zeros(len(cs), np.int64)
    nl = np.zeros(len(cs), np.int64)
    running = np.ones(len(cs), bool)
    for j in range(3):
        b = np.take(a, cs + 6 + j)
        running &= (b >= 65) & (b <= 90)
        col = np.where(running, col * 26 + (b.astype(np.int64) - 64), col)
        nl += running
    rows, nd = _digits(a, cs + 6 + nl, 8)
    quote = cs + 6 + nl + nd
    if len(cs) and (nl.min() < 1 or nd.min() < 1 or nd.max() > 7 or (np.take(a, quote) != _QUOTE).any()):
        raise Unusual("cell reference")
    if len(rows) and (rows.min() < 1 or rows.max() > MAX_ROW or col.max() > MAX_COL):
        raise Unusual("cell reference out of range")
    return rows, col, quote + 1


def _cell_types(a: np.ndarray, attrs: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Each cell's t="..." (first letter; 'S' for t="str"), 'n' when absent. `attrs` is
    where the attributes after r begin, `ends` where the tag's '>' or '/>' is."""
    kind = np.full(len(attrs), ord("n"), np.uint8)
    more = np.flatnonzero(ends > attrs)               # cells with attributes besides r
    if not len(more):
        return kind
    lens = ends[more] - attrs[more]
    width = int(lens.max())
    if width > 80:
        raise Unusual("long cell tag")
    w = _window(a, attrs[more], width + 2)
    inside = np.arange(width + 2)[None, :] < lens[:, None]
    # Only the plain spelling ` name="value"`: a quote of the other kind, a newline or tab, or
    # space around '=' would hide a t="..." from the search below. Such tags go to the parser.
    if (inside & ((w == ord("'")) | (w == 9) | (w == 10) | (w == 13))).any():
        raise Unusual("odd attribute spelling")
    eq = inside & (w == ord("="))
    named = np.zeros_like(eq)
    named[:, 1:-1] = (w[:, :-2] != _SPACE) & (w[:, 2:] == _QUOTE)
    if (eq & ~named).any():
        raise Unusual("odd attribute spelling")
    found = np.zeros(len(more), bool)
    for j in range(max(width - 3, 0)):
        hit = ~found & (j + 4 < lens) & (w[:, j] == _SPACE) & (w[:, j + 1] == ord("t")) \
            & (w[:, j + 2] == ord("=")) & (w[:, j + 3] == _QUOTE)
        if hit.any():
            k1, k2 = w[hit, j + 4], w[hit, j + 5]
            kind[more[hit]] = np.where((k1 == ord("s")) & (k2 == ord("t")), ord("S"), k1)
            found |= hit
    return kind


def _owner(cs: np.ndarray, tag_end: np.ndarray, close: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Index of the cell whose element contains each position in `at` (raises otherwise)."""
    ci = np.searchsorted(cs, at, side="right") - 1
    if len(at) and (ci.min() < 0 or (at <= tag_end[ci]).any() or (at >= close[ci]).any()):
        raise Unusual("a tag outside its cell")
    return ci


_MAIN_XMLNS = f'xmlns="{NS_MAIN}"'.encode()


def sheet_data(data: bytes) -> tuple[int, int] | None:
    """Where the body of a worksheet part's <sheetData> lies (start, stop), when the part can
    be scanned: unprefixed tags in the main namespace, no DTD before it, cells inside."""
    start = data.find(b"<sheetData")
    if start < 0 or b"<!" in data[:start] or _MAIN_XMLNS not in data[:start]:
        return None
    open_end = data.find(b">", start)
    if open_end < 0 or data[open_end - 1] == 0x2F:       # <sheetData/>: nothing to scan
        return None
    stop = data.find(b"</sheetData>", open_end)
    return (open_end + 1, stop) if stop >= 0 else None


# A big body is scanned in pieces of about this many bytes, cut before a <row>: the
# temporaries (several arrays per tag) stay in cache and the peak memory stays bounded.
CHUNK_BYTES = 16 << 20


def _chunks(data: bytes, start: int, stop: int) -> list[tuple[int, int]]:
    cuts = [start]
    while stop - cuts[-1] > CHUNK_BYTES:
        at = data.find(b"<row", cuts[-1] + CHUNK_BYTES, stop)
        while at >= 0 and data[at + 4:at + 5] not in (b" ", b">"):
            at = data.find(b"<row", at + 4, stop)
        if at < 0:
            break
        cuts.append(at)
    return list(zip(cuts, cuts[1:] + [stop]))


def scan(data: bytes, start: int, stop: int, shared: list[str]) -> Scanned | None:
    """The cells of a <sheetData> body (`data[start:stop]`, the bytes between its tags),
    or None when the body is not in the plain form and must go to the XML parser."""
    try:
        return _merged([_scan(data, a, b, shared) for a, b in _chunks(data, start, stop)])
    except (Unusual, ValueError, IndexError, OverflowError, UnicodeDecodeError):
        return None


def _merged(parts: list[Scanned]) -> Scanned:
    """One Scanned of consecutive pieces of a body (their byte offsets are the part's own)."""
    if len(parts) == 1:
        return parts[0]
    out = Scanned()
    cat = np.concatenate
    out.rows, out.cols, out.numbers = (cat([getattr(p, k) for p in parts]) for k in ("rows", "cols", "numbers"))
    out.child_rows, out.child_cols, out.child_si = (cat([getattr(p, k) for p in parts])
                                                    for k in ("child_rows", "child_cols", "child_si"))
    for p in parts:
        out.other.update(p.other)
        out.formulas += p.formulas
        out.copies += p.copies
    out.max_row, out.max_col = max(p.max_row for p in parts), max(p.max_col for p in parts)
    out.spans = _merged_spans([p.spans for p in parts if p.spans is not None])
    return out


def _merged_spans(parts: list[ValueSpans]) -> ValueSpans:
    cells = np.cumsum([0] + [len(p.rows) for p in parts[:-1]])
    cat = np.concatenate
    return ValueSpans(cat([p.rows for p in parts]), cat([p.cols for p in parts]), cat([p.kind for p in parts]),
                      cat([p.vo for p in parts]), cat([p.ve for p in parts]),
                      cat([p.vci + np.int32(c) for p, c in zip(parts, cells)]), cat([p.close for p in parts]))


@dataclass
class Layout:
    """Where each cell and each cached value sits in a sheet part (absolute byte offsets)."""

    lt: np.ndarray          # every '<' in the body, and the three bytes after each
    nx: tuple[np.ndarray, np.ndarray, np.ndarray]
    cs: np.ndarray          # each <c>'s '<'
    tag_end: np.ndarray     # its tag's '>'
    close: np.ndarray       # its '</c>' (or just past '/>')
    rows: np.ndarray
    cols: np.ndarray
    kind: np.ndarray        # t="..." first letter ('S' for str), 'n' when absent
    vo: np.ndarray          # each value element's '<' ...
    ve: np.ndarray          # ... where its text ends ('<' of '</v>'; vo + 3 for <v/>)
    vci: np.ndarray         # ... and the cell it belongs to


def _spans(lay: Layout) -> ValueSpans:
    close = np.where(lay.close > lay.tag_end + 1, lay.close, -1)
    return ValueSpans(lay.rows.astype(np.int32), lay.cols.astype(np.int32), lay.kind, lay.vo, lay.ve,
                      lay.vci.astype(np.int32), close)


def locate(data: bytes, start: int, stop: int) -> ValueSpans | None:
    """The ValueSpans of `data[start:stop]`, a <sheetData> body; None when it is not plain."""
    a = np.frombuffer(data, np.uint8)
    try:
        return _merged_spans([_spans(_locate(a, s, e)) for s, e in _chunks(data, start, stop)])
    except (Unusual, ValueError, IndexError, OverflowError):
        return None


def _locate(a: np.ndarray, start: int, stop: int) -> Layout:
    # Positions are absolute in the part; the bytes after `stop` (</sheetData>...) pad the windows.
    n = stop
    if stop <= start:
        raise Unusual("empty")
    # Every tag starts with '<'; its kind is read off the bytes after it. (np.take: a
    # gather of millions of bytes is several times faster with it than with a[idx].)
    lt = np.flatnonzero(a[start:stop] == _LT) + start
    nx1, nx2, nx3 = (np.take(a, lt + k) for k in (1, 2, 3))
    if ((nx1 == ord("!")) | (nx1 == ord("?"))).any():
        raise Unusual("comment, CDATA or processing instruction")
    name_end = (nx2 == _SPACE) | (nx2 == _GT) | (nx2 == _SLASH)
    is_c = nx1 == ord("c")
    cs = lt[is_c & name_end]
    if len(cs) == 0:
        raise Unusual("no cells")
    head = _window(a, cs + 2, 4)
    if not ((head[:, 0] == _SPACE) & (head[:, 1] == ord("r")) & (head[:, 2] == ord("=")) & (head[:, 3] == _QUOTE)).all():
        raise Unusual("a cell without r first")
    # Tags follow each other with nothing between them, so a <c> tag ends just before the
    # next '<' (pretty-printed files, with whitespace there, take the slower search).
    following = np.take(lt, np.searchsorted(lt, cs) + 1) if cs[-1] < lt[-1] else None
    if following is not None and (np.take(a, following - 1) == _GT).all():
        tag_end = following - 1
    else:
        gt = np.flatnonzero(a[start:stop] == _GT) + start
        tag_end = gt[np.searchsorted(gt, cs)]
    self_closing = np.take(a, tag_end - 1) == _SLASH
    closes = lt[(nx1 == _SLASH) & (nx2 == ord("c")) & (nx3 == _GT)]
    open_cells = np.flatnonzero(~self_closing)
    if len(closes) != len(open_cells):
        raise Unusual("unbalanced cells")
    close = tag_end + 1                                   # self-closing: the cell ends at its '>'
    close[open_cells] = closes
    nxt = np.append(cs[1:], n)
    if (close < tag_end).any() or (close > nxt).any():
        raise Unusual("cells out of order")
    rows, cols, after_r = _cell_refs(a, cs)
    kind = _cell_types(a, after_r, tag_end - self_closing)

    # <v>value</v>, and the empty values openpyxl writes: <v/>, <v /> (and <v></v>)
    is_v = nx1 == ord("v")
    vo = lt[is_v & (nx2 == _GT)]
    empty = is_v & (((nx2 == _SLASH) & (nx3 == _GT)) | ((nx2 == _SPACE) & (nx3 == _SLASH)))
    e_at = lt[empty]
    e_gt = e_at + np.where(nx2[empty] == _SLASH, 3, 4)         # the '>' of <v/> or <v />
    if (is_v & ~empty & (nx2 == _SPACE)).any() or (np.take(a, e_gt) != _GT).any():
        raise Unusual("<v> with attributes")
    ve = lt[(nx1 == _SLASH) & (nx2 == ord("v")) & (nx3 == _GT)]
    # each value closes at the very next tag: no markup inside
    if len(ve) != len(vo) or (len(vo) and (np.take(lt, np.searchsorted(lt, vo) + 1) != ve).any()):
        raise Unusual("<v> holds markup")
    if len(e_at):
        vo, ve = np.concatenate([vo, e_at]), np.concatenate([ve, e_at + 3])
        order = np.argsort(vo, kind="stable")
        vo, ve = vo[order], ve[order]
    vci = _owner(cs, tag_end, close, vo)
    if len(vci) > 1 and (np.diff(vci) == 0).any():
        raise Unusual("two values in a cell")
    return Layout(lt, (nx1, nx2, nx3), cs, tag_end, close, rows, cols, kind, vo, ve, vci)


def _scan(body: bytes, start: int, stop: int, shared: list[str]) -> Scanned:
    out = Scanned()
    a = np.frombuffer(body, np.uint8)
    if stop <= start:
        return out
    try:
        lay = _locate(a, start, stop)
    except Unusual as exc:
        if str(exc) == "no cells" and body.find(b"<c", start, stop) < 0:
            return out          # rows without cells
        raise
    lt, (nx1, nx2, nx3) = lay.lt, lay.nx
    cs, tag_end, close, rows, cols, kind = lay.cs, lay.tag_end, lay.close, lay.rows, lay.cols, lay.kind
    # an empty <v/> is no value (openpyxl's formula cells), but a formula's empty text result
    # is "" (LibreOffice writes t="str" and <v></v>)
    full = (lay.ve > lay.vo + 3) | (kind[lay.vci] == ord("S"))
    vo, ve, vci = lay.vo[full], lay.ve[full], lay.vci[full]
    name_end = (nx2 == _SPACE) | (nx2 == _GT) | (nx2 == _SLASH)
    out.max_row, out.max_col = int(rows.max()), int(cols.max())
    vkind = kind[vci]
    num = vkind == ord("n")
    starts, lens = vo[num] + 3, ve[num] - vo[num] - 3
    if len(starts):
        width = int(lens.max())
        if width == 0 or width > 64 or lens.min() == 0:
            raise Unusual("number width")
        w = _window(a, starts, width).copy()
        w[np.arange(width)[None, :] >= lens[:, None]] = 0
        values = _numbers(w)
        out.rows, out.cols, out.numbers = rows[vci[num]], cols[vci[num]], values
    _others(body, a, vo[~num], ve[~num], vkind[~num], rows[vci[~num]], cols[vci[~num]], shared, out)

    # inline strings
    iso = lt[(nx1 == ord("i")) & (nx2 == ord("s")) & (nx3 == _GT)]
    for ci, at in zip(_owner(cs, tag_end, close, iso).tolist(), iso.tolist()):
        if kind[ci] != ord("i"):
            continue
        end = body.find(b"</is>", at, int(close[ci]))
        if end < 0:
            raise Unusual("inline string")
        part = _PHONETIC.sub(b"", body[at + 4:end])
        out.other[(int(rows[ci]), int(cols[ci]))] = unescape("".join(t.decode() for t in _INLINE_T.findall(part)))
    for ci in np.flatnonzero(kind == ord("i")).tolist():
        out.other.setdefault((int(rows[ci]), int(cols[ci])), "")

    # formulas
    fo = lt[(nx1 == ord("f")) & name_end]
    fci = _owner(cs, tag_end, close, fo)
    if len(fci) > 1 and (np.diff(fci) == 0).any():
        raise Unusual("two formulas in a cell")
    child = np.zeros(len(fo), bool)
    if len(fo):
        child = (_window(a, fo, len(_CHILD)) == _CHILD).all(axis=1)
    if child.any():
        si, end = _digits(a, fo[child] + len(_CHILD), 10)
        tail = _window(a, fo[child] + len(_CHILD) + end, 3)
        plain = (end >= 1) & (tail[:, 0] == _QUOTE) & (tail[:, 1] == _SLASH) & (tail[:, 2] == _GT)
        idx = np.flatnonzero(child)
        child[idx[~plain]] = False
        ci = fci[idx[plain]]
        out.child_rows, out.child_cols, out.child_si = rows[ci], cols[ci], si[plain]
    lone = _copied(body, a, lt, fo, fci, ~child, rows, cols, out)
    for i in lone.tolist():
        at = int(fo[i])
        end = body.find(b">", at, stop)
        closed = body[end - 1] == _SLASH
        spelled = body[at + 2:end - 1 if closed else end].decode()
        if not _ATTRS.fullmatch(spelled):
            raise Unusual("odd attribute spelling")
        attrs = dict(_ATTR.findall(spelled))
        text = None
        if not closed:
            text_end = body.find(b"<", end)
            if body[text_end:text_end + 4] != b"</f>":
                raise Unusual("formula holds markup")
            text = unescape(body[end + 1:text_end].decode())
        ci = int(fci[i])
        if attrs.get("t") == "array":     # the cell's cm="k": a dynamic array (see xlsx.py)
            cm = _CM.search(body, int(cs[ci]), int(tag_end[ci]))
            if cm is not None:
                attrs["cm"] = cm.group(1).decode()
        out.formulas.append(((int(rows[ci]), int(cols[ci])), attrs, text))
    out.spans = _spans(lay)
    return out


def _copied(body: bytes, a: np.ndarray, lt: np.ndarray, fo: np.ndarray, fci: np.ndarray, todo: np.ndarray,
            rows: np.ndarray, cols: np.ndarray, out: Scanned) -> np.ndarray:
    """Put the plain formulas among fo[todo] (`<f>text</f>`, no t="...") that are copies of
    one another into out.copies; return the indices of the formulas left to read one by one."""
    cand = np.flatnonzero(todo)
    if len(cand) < 2:
        return cand
    at = fo[cand]
    opened = np.zeros(len(cand), np.int64)          # length of the opening tag, 0: not plain
    for p in _PLAIN_F:
        hit = (opened == 0) & (_window(a, at, len(p)) == p).all(axis=1)
        opened[hit] = len(p)
    # the text runs to the next tag, which must be its </f>
    nxt = np.take(lt, np.minimum(np.searchsorted(lt, at) + 1, len(lt) - 1))
    closes = (np.take(a, nxt + 1) == _SLASH) & (np.take(a, nxt + 2) == ord("f")) & (np.take(a, nxt + 3) == _GT)
    plain = (opened > 0) & closes & (nxt > at + opened)
    if plain.sum() < 2:
        return cand
    idx = cand[plain]
    starts, ends = at[plain] + opened[plain], nxt[plain]
    ci = fci[idx]
    frows, fcols = rows[ci], cols[ci]
    groups, rest = copied_runs(a, starts, ends, frows, fcols,
                               lambda i: unescape(body[starts[i]:ends[i]].decode()))
    for text, t, members in groups:
        text = text.strip()
        if not text:
            rest = np.concatenate([rest, members])      # empty formulas: as the one-by-one path has them
            continue
        out.copies.append((text, (int(frows[t]), int(fcols[t])), frows[members], fcols[members]))
    return np.sort(np.concatenate([cand[~plain], idx[rest]]))


def _others(body: bytes, a: np.ndarray, vo: np.ndarray, ve: np.ndarray, kind: np.ndarray, rows: np.ndarray,
            cols: np.ndarray, shared: list[str], out: Scanned) -> None:
    """Text, boolean and error values into out.other. A column of errors or labels repeats a
    few values: each distinct (type, spelling) is read once, and the cells get it in bulk."""
    lens = ve - vo - 3
    if not len(vo):
        return
    width = int(lens.max())
    if width > 64 or len(vo) < 64:
        for i in range(len(vo)):
            text = body[vo[i] + 3:ve[i]].decode()
            out.other[(int(rows[i]), int(cols[i]))] = _typed(int(kind[i]), text, shared)
        return
    w = np.zeros((len(vo), width + 1), np.uint8)
    w[:, 0] = kind
    w[:, 1:] = _window(a, vo + 3, width)
    w[:, 1:][np.arange(width)[None, :] >= lens[:, None]] = 0
    keys, inverse = np.unique(w.view(f"S{width + 1}").reshape(-1), return_inverse=True)
    typed = [_typed(k[0], k[1:].decode(), shared) for k in keys.tolist()]
    out.other.update(zip(zip(rows.tolist(), cols.tolist()), [typed[i] for i in inverse.tolist()]))


def _typed(kind: int, text: str, shared: list[str]) -> CellValue:
    if kind == ord("s"):
        return shared[int(text)]
    if kind in (ord("S"), ord("d")):
        return unescape(text)
    if kind == ord("b"):
        return text.strip() in ("1", "true")
    if kind == ord("e"):
        return CellError(unescape(text))
    if kind == ord("i"):
        raise Unusual("inline string with <v>")
    raise Unusual("unknown cell type")
