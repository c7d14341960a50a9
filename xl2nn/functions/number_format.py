"""Excel number-format codes, as TEXT(value, format_text) uses them.

This subset of Excel's number formats is understood; any other format raises
UnsupportedFormula naming it, rather than guessing:
  * "General" (any case) and "@"; "" gives "".
  * Up to four sections, positive;negative;zero;text. A one-section format puts "-" before
    a negative number that does not round to zero; the others show its absolute value.
    A text value uses the text section (with @ for the text), or comes back unchanged.
  * Numbers: digit placeholders 0 # ? (interleaved literals allowed, as in
    "(000) 000-0000"), one decimal point (always shown, as Excel does: "#.#" gives "12."),
    "," between placeholders for thousands and after them to divide by 1,000, one "%",
    scientific notation with one integer placeholder ("0.00E+00", "0E-0").
  * Dates and times (1900 date system, serials 0 to 2958465.99999): yy yyyy, m mm mmm mmmm
    mmmmm, d dd ddd dddd, h hh, m mm as minutes (after h or before s), s ss, AM/PM, and
    elapsed [h] [m] [s]. Negative or too large serials are #VALUE!.
  * Literals: "quoted", \\x, _x (a space), *x (a fill: nothing, TEXT has no width), and the
    characters $ - + / ( ) : ! ^ & ' ~ { } < > = and space. Colours such as [Red] are
    ignored.
  Not supported: conditions ([>100]), locale and currency codes ([$-409]), fractions
  (# ?/?), A/P, fractional seconds (ss.00), years written y, yyy or yyyyy, and letters
  outside the codes above.
"""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Context as DecimalContext, Decimal
from functools import lru_cache

from ..cells import CellError
from ..errors import UnsupportedFormula
from .values import VALUE, number_text

_DEC = DecimalContext(prec=1000)    # exact enough for every double written out in full


@dataclass(frozen=True)
class _Tok:
    kind: str       # lit slash digit point comma pct exp general at date ampm elapsed
    text: str = ""  # the literal, the placeholder (0 # ?), the exponent sign, the date code


@dataclass(frozen=True)
class _Section:
    kind: str       # number, date, general, text, literal
    toks: tuple[_Tok, ...]


@dataclass(frozen=True)
class _Format:
    numeric: tuple[_Section, ...]
    text: _Section | None


class _Unsupported(Exception):
    pass


_LITERALS = set("$-+():!^&'~{}<>= ")
_COLOURS = {"black", "blue", "cyan", "green", "magenta", "red", "white", "yellow"}


def _split_sections(fmt: str) -> list[str]:
    out, cur, i = [], [], 0
    while i < len(fmt):
        c = fmt[i]
        if c == '"':
            j = fmt.find('"', i + 1)
            if j < 0:
                raise _Unsupported("an unclosed quote")
            cur.append(fmt[i:j + 1])
            i = j + 1
            continue
        if c in "\\_*" and i + 1 < len(fmt):
            cur.append(fmt[i:i + 2])
            i += 2
            continue
        if c == ";":
            out.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    out.append("".join(cur))
    return out


def _tokens(sec: str) -> list[_Tok]:
    out: list[_Tok] = []
    low, i = sec.lower(), 0
    while i < len(sec):
        c = sec[i]
        if c == '"':
            j = sec.index('"', i + 1)
            out.append(_Tok("lit", sec[i + 1:j]))
            i = j + 1
        elif c in "\\_*":
            if i + 1 >= len(sec):
                raise _Unsupported(f"a {c} at the end")
            if c != "*":            # *x fills a column's width: TEXT has none
                out.append(_Tok("lit", sec[i + 1] if c == "\\" else " "))
            i += 2
        elif c == "[":
            j = sec.find("]", i)
            inner = low[i + 1:j] if j > 0 else ""
            if re.fullmatch(r"h+|m+|s+", inner):
                out.append(_Tok("elapsed", inner))
            elif not (inner in _COLOURS or re.fullmatch(r"color\d{1,2}", inner)):
                raise _Unsupported(f"[{sec[i + 1:j] if j > 0 else sec[i + 1:]}]")
            i = j + 1
        elif c in "0#?":
            out.append(_Tok("digit", c))
            i += 1
        elif c in "eE" and sec[i + 1:i + 2] in ("+", "-") and i + 1 < len(sec):
            out.append(_Tok("exp", c + sec[i + 1]))
            i += 2
        elif low.startswith("general", i):
            out.append(_Tok("general"))
            i += 7
        elif low.startswith("am/pm", i):
            out.append(_Tok("ampm"))
            i += 5
        elif c.lower() in "ymdhs":
            j = i
            while j < len(sec) and sec[j].lower() == c.lower():
                j += 1
            out.append(_Tok("date", low[i:j]))
            i = j
        else:
            kinds = {".": "point", ",": "comma", "%": "pct", "@": "at", "/": "slash"}
            if c in kinds:
                out.append(_Tok(kinds[c], c))
            elif c in _LITERALS:
                out.append(_Tok("lit", c))
            else:
                raise _Unsupported(f"the character {c!r}")
            i += 1
    return out


def _section(sec: str) -> _Section:
    toks = tuple(_tokens(sec))
    kinds = {t.kind for t in toks}
    dated = bool(kinds & {"date", "ampm", "elapsed"})
    families = [dated, "digit" in kinds, "general" in kinds, "at" in kinds]
    if sum(families) > 1:
        raise _Unsupported("a section mixing dates, digits, General or @")
    if dated:
        return _Section("date", _check_date(toks))
    if "digit" in kinds:
        return _Section("number", _check_number(toks))
    if kinds - {"lit", "slash", "general", "at"}:
        raise _Unsupported("a section without digit placeholders")
    kind = "general" if "general" in kinds else "text" if "at" in kinds else "literal"
    return _Section(kind, tuple(_Tok("lit", "/") if t.kind == "slash" else t for t in toks))


def _check_number(toks: tuple[_Tok, ...]) -> tuple[_Tok, ...]:
    kinds = [t.kind for t in toks]
    if "slash" in kinds:
        raise _Unsupported("fractions")
    if kinds.count("point") > 1 or kinds.count("pct") > 1 or kinds.count("exp") > 1:
        raise _Unsupported("a repeated '.', '%' or E+")
    if "exp" in kinds:
        e = kinds.index("exp")
        point = kinds.index("point") if "point" in kinds else e
        if kinds[:point].count("digit") != 1 or "comma" in kinds[:e]:
            raise _Unsupported("scientific notation without exactly one integer digit")
        after = toks[e + 1:]
        if not after or after[0].kind != "digit" or any(
                t.kind not in ("digit", "lit") or (t.kind == "digit" and t.text != "0") for t in after):
            raise _Unsupported("an exponent other than E+0, E+00, ...")
    end = _int_region_end(toks)
    ints = [i for i in range(end) if kinds[i] == "digit"]
    if _commas(toks, end)[1] and any(k not in ("digit", "comma") for k in kinds[ints[0]:ints[-1]]):
        raise _Unsupported("literals between thousands-grouped digits")
    return toks


_DATE_CODES = {"y": (2, 4), "m": (1, 2, 3, 4, 5), "d": (1, 2, 3, 4), "h": (1, 2), "s": (1, 2)}


def _check_date(toks: tuple[_Tok, ...]) -> tuple[_Tok, ...]:
    out = []
    for i, t in enumerate(toks):
        if t.kind == "date" and len(t.text) not in _DATE_CODES[t.text[0]]:
            raise _Unsupported(f"the date code {t.text!r}")
        if t.kind in ("digit", "pct", "exp"):
            raise _Unsupported("digits or % in a date format (fractional seconds)")
        if t.kind == "date" and t.text[0] == "m" and len(t.text) <= 2 and _is_minute(toks, i):
            t = _Tok("date", "n" * len(t.text))     # minutes
        out.append(_Tok("lit", t.text) if t.kind in ("point", "comma", "slash") else t)
    return tuple(out)


def _is_minute(toks: tuple[_Tok, ...], i: int) -> bool:
    """m or mm is minutes right after an hour or right before a second (literals between)."""
    for j in range(i - 1, -1, -1):
        t = toks[j]
        if t.kind in ("date", "elapsed"):
            if t.text[0] == "h":
                return True
            break
    for t in toks[i + 1:]:
        if t.kind in ("date", "elapsed"):
            return t.text[0] == "s"
    return False


@lru_cache(maxsize=256)
def _parse(fmt: str) -> _Format | str:
    """The format, or why it is outside the supported subset."""
    try:
        if fmt.lower() == "general":
            return _Format((_Section("general", (_Tok("general"),)),), None)
        secs = [_section(s) for s in _split_sections(fmt)]
        if len(secs) > 4:
            raise _Unsupported("more than four sections")
        text = None
        if len(secs) == 4 or secs[-1].kind == "text":
            text, secs = secs[-1], secs[:-1]
            if text.kind not in ("text", "literal"):
                raise _Unsupported("a number or date in the text section")
        if any(s.kind == "text" for s in secs):
            raise _Unsupported("@ outside the last section")
        return _Format(tuple(secs), text)
    except _Unsupported as e:
        return str(e)


def parse_format(fmt: str) -> _Format:
    got = _parse(fmt)
    if isinstance(got, str):
        raise UnsupportedFormula(
            f"TEXT format {fmt!r} is not supported by xl2nn ({got}); the supported subset is "
            "listed in xl2nn/functions/number_format.py")
    return got


def _dec15(x: float) -> Decimal:
    """x to Excel's 15 significant digits, the precision it shows numbers with."""
    return Decimal(f"{x:.14e}")


def _round(d: Decimal, places: int) -> Decimal:
    return d.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP, context=_DEC)


def _render_number(toks: tuple[_Tok, ...], x: float) -> tuple[str, bool]:
    """x (not negative) in a number section; also whether what shows is nonzero."""
    kinds = [t.kind for t in toks]
    d = _dec15(x) * (100 ** kinds.count("pct"))
    digits_before = _int_region_end(toks)
    scale, grouped = _commas(toks, digits_before)
    d = d.scaleb(-3 * len(scale), context=_DEC)
    if "exp" in kinds:
        return _render_scientific(toks, d)
    frac_ph = [t.text for i, t in enumerate(toks) if t.kind == "digit" and i >= digits_before]
    q = _round(d, len(frac_ph))
    whole, _, frac = format(q, "f").partition(".")
    whole = "" if whole == "0" else whole
    int_ph = [t.text for i, t in enumerate(toks) if t.kind == "digit" and i < digits_before]
    if not int_ph:                              # ".00": the integer digits go before the point
        int_ph = ["#"]
    int_out = _place_integer(int_ph, whole)
    if grouped:
        int_out = [_group("".join(int_out))] + [""] * (len(int_out) - 1)
    frac_out = _place_fraction(frac_ph, frac)
    out, ni, nf, int_done = [], 0, 0, False
    for i, t in enumerate(toks):
        if t.kind == "digit" and i < digits_before:
            out.append(int_out[ni])
            ni += 1
            int_done = True
        elif t.kind == "digit":
            if not int_done:
                out.append(int_out[0])
                int_done = True
            out.append(frac_out[nf])
            nf += 1
        elif t.kind == "point":
            if not int_done:
                out.append(int_out[0])
                int_done = True
            out.append(".")
        elif t.kind == "pct":
            out.append("%")
        elif t.kind == "comma":
            if i not in scale and i not in grouped:
                out.append(",")
        else:
            out.append(t.text)
    return "".join(out), q != 0


def _int_region_end(toks: tuple[_Tok, ...]) -> int:
    """Index where the integer placeholders end: the decimal point, the exponent, or the end."""
    for i, t in enumerate(toks):
        if t.kind in ("point", "exp"):
            return i
    return len(toks)


def _commas(toks: tuple[_Tok, ...], int_end: int) -> tuple[set[int], set[int]]:
    """Which commas divide by 1,000 (right after the last placeholders) and which group
    thousands (between integer placeholders)."""
    scale, group = set(), set()
    for i, t in enumerate(toks):
        if t.kind != "comma":
            continue
        j = i - 1
        while j >= 0 and toks[j].kind == "comma":
            j -= 1
        k = i + 1
        while k < len(toks) and toks[k].kind == "comma":
            k += 1
        after_digit = j >= 0 and toks[j].kind == "digit"
        before_digit = k < len(toks) and toks[k].kind == "digit"
        if before_digit and i < int_end and any(x.kind == "digit" for x in toks[:i]):
            group.add(i)
        elif after_digit and not before_digit:
            scale.add(i)
    return scale, group


def _place_integer(ph: list[str], whole: str) -> list[str]:
    """The integer digits, right-aligned over the placeholders; the first takes any extra."""
    k, out = len(ph), []
    for j, p in enumerate(ph):
        r = k - 1 - j                       # this placeholder's digit, counted from the right
        s = whole[len(whole) - 1 - r] if r < len(whole) else ("0" if p == "0" else " " if p == "?" else "")
        if j == 0 and len(whole) > k:
            s = whole[:len(whole) - k + 1]
        out.append(s)
    return out


def _place_fraction(ph: list[str], frac: str) -> list[str]:
    out = list(frac)
    i = len(ph) - 1
    while i >= 0 and ph[i] != "0" and out[i] == "0":    # optional trailing zeros go
        out[i] = " " if ph[i] == "?" else ""
        i -= 1
    return out


def _group(s: str) -> str:
    head = s.lstrip(" ")
    pad = s[:len(s) - len(head)]
    parts = []
    while len(head) > 3:
        parts.append(head[-3:])
        head = head[:-3]
    return pad + ",".join(([head] if head else []) + parts[::-1])


def _render_scientific(toks: tuple[_Tok, ...], d: Decimal) -> tuple[str, bool]:
    kinds = [t.kind for t in toks]
    e_at = kinds.index("exp")
    point = kinds.index("point") if "point" in kinds else e_at
    frac_ph = [t.text for t in toks[point:e_at] if t.kind == "digit"]
    exp_width = sum(1 for t in toks[e_at:] if t.kind == "digit")
    e = 0
    m = _round(d, len(frac_ph))
    if d != 0:
        e = d.adjusted()
        m = _round(d.scaleb(-e, context=_DEC), len(frac_ph))
        if m >= 10:
            e += 1
            m = _round(d.scaleb(-e, context=_DEC), len(frac_ph))
    whole, _, frac = format(m, "f").partition(".")
    frac_out = _place_fraction(frac_ph, frac)
    out, nf, exp_done = [], 0, False
    for i, t in enumerate(toks):
        if t.kind == "digit" and i < point:
            out.append("" if whole == "0" and t.text == "#" else whole)
        elif t.kind == "digit" and i < e_at:
            out.append(frac_out[nf])
            nf += 1
        elif t.kind == "digit":
            if not exp_done:
                out.append(str(abs(e)).zfill(exp_width))
                exp_done = True
        elif t.kind == "exp":
            sign = "-" if e < 0 else ("+" if t.text[1] == "+" else "")
            out.append(t.text[0] + sign)
        elif t.kind == "point":
            out.append(".")
        elif t.kind == "pct":
            out.append("%")
        else:
            out.append(t.text)
    return "".join(out), m != 0


_MONTH_NAMES = ("January", "February", "March", "April", "May", "June", "July", "August",
                "September", "October", "November", "December")
_DAY_NAMES = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")
LAST_SERIAL = 2958465           # 31 December 9999


def excel_date(n: int) -> tuple[int, int, int]:
    """Serial day n -> (year, month, day) in the 1900 system: 0 is "1900-01-00" and 60 the
    29 February 1900 that never was, as Excel shows them."""
    if n == 0:
        return 1900, 1, 0
    if n == 60:
        return 1900, 2, 29
    d = dt.date(1899, 12, 31 if n < 60 else 30) + dt.timedelta(days=n)
    return d.year, d.month, d.day


def _render_date(toks: tuple[_Tok, ...], x: float) -> str | CellError:
    if x < 0 or x >= LAST_SERIAL + 1:
        return VALUE
    # Excel rounds to the second before splitting the serial into its parts.
    secs = int((_dec15(x) * 86400).quantize(Decimal(1), rounding=ROUND_HALF_UP, context=_DEC))
    day, in_day = divmod(secs, 86400)
    if day > LAST_SERIAL:
        return VALUE
    year, month, dom = excel_date(day)
    hour, minute, second = in_day // 3600, in_day // 60 % 60, in_day % 60
    twelve = any(t.kind == "ampm" for t in toks)
    out = []
    for t in toks:
        if t.kind == "date":
            out.append(_date_part(t.text, year, month, dom, day, hour, minute, second, twelve))
        elif t.kind == "elapsed":
            total = {"h": secs // 3600, "m": secs // 60, "s": secs}[t.text[0]]
            out.append(str(total).zfill(len(t.text)))
        elif t.kind == "ampm":
            out.append("AM" if hour < 12 else "PM")
        else:
            out.append(t.text)
    return "".join(out)


def _date_part(code: str, year: int, month: int, dom: int, day: int, hour: int, minute: int,
               second: int, twelve: bool) -> str:
    c, n = code[0], len(code)
    if c == "y":
        return str(year)[-2:] if n == 2 else str(year)
    if c == "m":
        return (str(month), f"{month:02d}", _MONTH_NAMES[month - 1][:3], _MONTH_NAMES[month - 1],
                _MONTH_NAMES[month - 1][0])[n - 1]
    if c == "d":
        weekday = _DAY_NAMES[(day + 6) % 7]    # Excel's weekday from the serial (1 is a Sunday)
        return (str(dom), f"{dom:02d}", weekday[:3], weekday)[n - 1]
    if c == "h":
        h = (hour % 12 or 12) if twelve else hour
        return str(h).zfill(n)
    value = minute if c == "n" else second
    return str(value).zfill(n)


def format_number(x: float, fmt: _Format) -> str | CellError:
    secs = fmt.numeric
    if not secs:
        return number_text(x)                   # "@" alone: numbers in General
    sign = False
    if len(secs) == 1:
        sec, sign = secs[0], x < 0
    elif x > 0 or (x == 0 and len(secs) == 2):
        sec = secs[0]
    elif x < 0:
        sec = secs[1]
    else:
        sec = secs[2]
    v = abs(x)
    if sec.kind == "number":
        s, nonzero = _render_number(sec.toks, v)
        return "-" + s if sign and nonzero else s
    if sec.kind == "date":
        return VALUE if sign else _render_date(sec.toks, v)
    if sec.kind == "general":
        s = "".join(number_text(v) if t.kind == "general" else t.text for t in sec.toks)
        return "-" + s if sign else s
    return "".join(t.text for t in sec.toks)     # only literals: LibreOffice adds no sign


def format_text(s: str, fmt: _Format) -> str:
    if fmt.text is None:
        return s
    return "".join(s if t.kind == "at" else t.text for t in fmt.text.toks)


__all__ = ["parse_format", "format_number", "format_text", "excel_date", "LAST_SERIAL"]
