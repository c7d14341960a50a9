"""Text functions: the ones a data-preparation column uses.

Every function here is elementwise over (F, h, w) except CONCAT and TEXTJOIN, which join
whole ranges into one text per cell. Arguments are coerced the way Excel does: numbers
become text as Excel shows them (`number_text`), booleans "TRUE"/"FALSE", empty cells ""
or 0; counts and positions are floored, and a negative count or a position below 1 is
#VALUE!. The first error among the arguments, left to right, is the result. Lengths and
positions count UTF-16 code units, as Excel does (LEN of an emoji is 2), and a text
result longer than Excel's 32,767-character cell limit is #VALUE!.

TEXT(value, format_text) understands the subset of Excel's number formats listed in
number_format.py; any other format raises UnsupportedFormula naming it. VALUE(text) and
TEXT's text values read numbers, dates and times as numtext.py describes.
"""
from __future__ import annotations

import math
import re
from typing import Any, Callable

import numpy as np

from ..cells import CellError
from .number_format import format_number, format_text, parse_format
from .numtext import parse_number
from .registry import Context, Elementwise, argument, excel
from .values import EMPTY, NUM, VALUE, Val, from_objects, to_bool, to_number, to_objects, to_text
from .wildcard import wildcard

MAX_TEXT = 32767           # Excel's cell limit: a longer text result is #VALUE!

Coerce = Callable[[Any], Any]


# -- text as Excel counts it: UTF-16 code units ---------------------------------------

_SURROGATE = re.compile("[\ud800-\udfff]")


def units(s: str) -> str:
    """`s` with each character beyond U+FFFF split into its two UTF-16 surrogates, so that
    len() and slicing count what Excel counts."""
    if s.isascii() or max(s) <= "\uffff":
        return s
    out = []
    for c in s:
        o = ord(c) - 0x10000
        out.append(c if o < 0 else chr(0xD800 + (o >> 10)) + chr(0xDC00 + (o & 0x3FF)))
    return "".join(out)


def joined(s: str) -> str:
    """Surrogate pairs back into characters; a lone half (cut by LEFT or MID) stays."""
    if s.isascii() or not _SURROGATE.search(s):
        return s
    return s.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")


def _result(v: object) -> object:
    if isinstance(v, str):
        v = joined(v)
        if len(v) > MAX_TEXT or (not v.isascii() and len(units(v)) > MAX_TEXT):
            return VALUE
    return v


# -- argument coercions -----------------------------------------------------------------

def _text(x: Any) -> str | CellError:
    return to_text(x)


def _text16(x: Any) -> str | CellError:
    t = to_text(x)
    return t if isinstance(t, CellError) else units(t)


def _int(x: Any) -> int | CellError:
    """A count or position: Excel floors it (LEFT("abc",1.9) is "a")."""
    n = to_number(x)
    return n if isinstance(n, CellError) else math.floor(n)


def _raw(x: Any) -> Any:
    return x


# -- running a scalar function over blocks ----------------------------------------------

def elementwise(fn: Callable[..., object], args: list[Val], coerce: list[Coerce], ctx: Context) -> Val:
    """fn over every entry of the arguments, lined up as Excel lines arrays up; each argument
    read with its coercion, the first coercion error wins."""
    return Elementwise(_no_tensor_form, lambda *xs: _result(fn(*xs)), coerce=tuple(coerce)).slow(args, ctx)


def _no_tensor_form(*_: object) -> None:
    return None      # text has none: Elementwise.slow is the only path


def _register(name: str, fn: Callable[..., object], coerce: list[Coerce], defaults: tuple = ()) -> None:
    """An elementwise text function of len(coerce) arguments; the last len(defaults) may be
    left off the call, and then take these values."""
    n = len(coerce)
    fill = (None,) * (n - len(defaults)) + defaults

    def impl(args: list[Val | None], ctx: Context) -> Val:
        vals = [argument(args, i, ctx, fill[i]) for i in range(n)]
        return elementwise(fn, vals, coerce, ctx)
    excel(name, "Text", min_args=n - len(defaults), max_args=n, differentiable=False)(impl)


# -- the scalar functions -----------------------------------------------------------------

def _left(s: str, n: int) -> object:
    return VALUE if n < 0 else s[:n]


def _right(s: str, n: int) -> object:
    if n < 0:
        return VALUE
    return s[max(len(s) - n, 0):]


def _mid(s: str, start: int, n: int) -> object:
    if start < 1 or n < 0:
        return VALUE
    return s[start - 1:start - 1 + n]


def _upper(s: str) -> str:
    # One character for one: Excel's case mapping never changes a text's length (Python's
    # full mapping turns "ß" into "SS").
    return "".join(u if len(u := c.upper()) == 1 else c for c in s)


def _lower(s: str) -> str:
    return "".join(low if len(low := c.lower()) == 1 else c for c in s)


def _proper(s: str) -> str:
    # A letter is capitalised when the character before it is not a letter: "o'neil" ->
    # "O'Neil", "2-way" -> "2-Way", "abc1def" -> "Abc1Def".
    out, prev_letter = [], False
    for c in s:
        out.append(_lower(c) if prev_letter else _upper(c))
        prev_letter = c.isalpha()
    return "".join(out)


def _trim(s: str) -> str:
    # Only the space character: tabs and non-breaking spaces stay, inner runs become one.
    return " ".join(w for w in s.split(" ") if w)


def _find_at(find: str, within: str, start: int, search: Callable[[int], int]) -> object:
    # Excel: start must lie inside within_text; an empty find_text matches at start.
    if start < 1 or start > len(within):
        return VALUE
    if not find:
        return float(start)
    i = search(start - 1)
    return VALUE if i < 0 else float(i + 1)


def _find(find: str, within: str, start: int) -> object:
    return _find_at(find, within, start, lambda at: within.find(find, at))


def _search(find: str, within: str, start: int) -> object:
    def at(i: int) -> int:
        m = wildcard(find).search(within, i)
        return m.start() if m else -1
    return _find_at(find, within, start, at)


def _substitute(s: str, old: str, new: str, instance: int | None = None) -> object:
    if instance is not None and instance < 1:
        return VALUE
    if not old:
        return s
    if instance is None:
        return s.replace(old, new)
    at = -len(old)
    for _ in range(instance):       # occurrences counted without overlap, left to right
        at = s.find(old, at + len(old))
        if at < 0:
            return s
    return s[:at] + new + s[at + len(old):]


def _replace(s: str, start: int, n: int, new: str) -> object:
    if start < 1 or n < 0:
        return VALUE
    return s[:start - 1] + new + s[start - 1 + n:]


def _rept(s: str, n: int) -> object:
    if n < 0:
        return VALUE
    if s and n > MAX_TEXT // len(s):
        return VALUE                # checked before building a huge string
    return s * n


def _t(x: Any) -> object:
    return x if isinstance(x, str) else ""


_register("LEN", lambda s: float(len(s)), [_text16])
_register("LEFT", _left, [_text16, _int], defaults=(1,))
_register("RIGHT", _right, [_text16, _int], defaults=(1,))
_register("MID", _mid, [_text16, _int, _int])
_register("UPPER", _upper, [_text])
_register("LOWER", _lower, [_text])
_register("PROPER", _proper, [_text])
_register("TRIM", _trim, [_text])
_register("EXACT", lambda a, b: a == b, [_text, _text])
_register("FIND", _find, [_text16, _text16, _int], defaults=(1,))
_register("SEARCH", _search, [_text16, _text16, _int], defaults=(1,))
_register("REPLACE", _replace, [_text16, _int, _int, _text16])
_register("REPT", _rept, [_text, _int])
_register("T", _t, [_raw])


@excel("SUBSTITUTE", "Text", min_args=3, max_args=4, differentiable=False)
def substitute(args: list[Val | None], ctx: Context) -> Val:
    vals = [argument(args, i, ctx) for i in range(len(args))]
    return elementwise(_substitute, vals, [_text, _text, _text, _int][:len(vals)], ctx)


@excel("CONCATENATE", "Text", min_args=1, differentiable=False)
def concatenate(args: list[Val | None], ctx: Context) -> Val:
    vals = [argument(args, i, ctx) for i in range(len(args))]
    return elementwise(lambda *parts: "".join(parts), vals, [_text] * len(vals), ctx)


# -- CONCAT and TEXTJOIN: whole ranges into one text ---------------------------------------

def _join(delims: list[str], parts: list[str]) -> str:
    """parts joined with the delimiters taken in turn (TEXTJOIN cycles through a range of them)."""
    if not parts:
        return ""
    out = [parts[0]]
    for k, p in enumerate(parts[1:]):
        out.append(delims[k % len(delims)] if delims else "")
        out.append(p)
    return "".join(out)


def _texts(block: np.ndarray, skip_empty: bool) -> list[str] | CellError:
    out = []
    for x in block.reshape(-1):                 # row by row, as Excel reads a range
        t = to_text(x)
        if isinstance(t, CellError):
            return t
        if t or not skip_empty:
            out.append(t)
    return out


def _joined_per_cell(vals: list[Val], ctx: Context,
                     one: Callable[[list[np.ndarray]], object]) -> Val:
    objs = [to_objects(v) for v in vals]
    f = max(o.shape[0] for o in objs)
    out = np.empty((f, 1, 1), dtype=object)
    for i in range(f):
        out[i, 0, 0] = _result(one([o[min(i, o.shape[0] - 1)] for o in objs]))
    return from_objects(out, ctx.device)


def _textjoin_one(blocks: list[np.ndarray]) -> object:
    delims = _texts(blocks[0], skip_empty=False)
    if isinstance(delims, CellError):
        return delims
    skip = to_bool(blocks[1].reshape(-1)[0])
    if isinstance(skip, CellError):
        return skip
    parts: list[str] = []
    for b in blocks[2:]:
        got = _texts(b, skip)
        if isinstance(got, CellError):
            return got
        parts.extend(got)
    return _join(delims, parts)


@excel("TEXTJOIN", "Text", min_args=3, differentiable=False, args="RVR")
def textjoin(args: list[Val | None], ctx: Context) -> Val:
    vals = [argument(args, i, ctx) for i in range(len(args))]
    return _joined_per_cell(vals, ctx, _textjoin_one)


@excel("CONCAT", "Text", min_args=1, differentiable=False, args="R")
def concat(args: list[Val | None], ctx: Context) -> Val:
    vals = [argument(args, i, ctx) for i in range(len(args))]

    def one(blocks: list[np.ndarray]) -> object:
        parts: list[str] = []
        for b in blocks:
            got = _texts(b, skip_empty=False)
            if isinstance(got, CellError):
                return got
            parts.extend(got)
        return "".join(parts)
    return _joined_per_cell(vals, ctx, one)


# -- VALUE: text read as a number (the grammar is in numtext.py) ----------------------------

def _value(x: Any) -> object:
    if x is None:
        return 0.0
    if isinstance(x, bool):
        return VALUE                # Excel: VALUE(TRUE) is #VALUE! (LibreOffice gives TRUE)
    if isinstance(x, (int, float)):
        return float(x)
    got = parse_number(str(x))
    return VALUE if got is None else got


@excel("VALUE", "Text", min_args=1, max_args=1)
def value(args: list[Val | None], ctx: Context) -> Val:
    v = argument(args, 0, ctx)
    k = v.uniform()
    if k in (NUM, EMPTY):
        return Val(v.num, NUM)      # numbers pass straight through, gradient and all
    return elementwise(_value, [v], [_raw], ctx)


# -- TEXT: a number shown in a format --------------------------------------------------------

def _text_fn(x: Any, fmt_text: str) -> object:
    fmt = parse_format(fmt_text)
    if x is None:
        x = 0.0
    if isinstance(x, str):
        n = parse_number(x)
        if n is None:
            return format_text(x, fmt)
        x = n
    return format_number(float(x), fmt)


@excel("TEXT", "Text", min_args=2, max_args=2, differentiable=False)
def text(args: list[Val | None], ctx: Context) -> Val:
    vals = [argument(args, i, ctx) for i in range(2)]
    return elementwise(_text_fn, vals, [_raw_value, _text], ctx)


def _raw_value(x: Any) -> Any:
    # A boolean formats as the number 1 or 0, as LibreOffice does.
    return float(x) if isinstance(x, bool) else x


__all__ = ["MAX_TEXT", "units", "joined", "elementwise"]
