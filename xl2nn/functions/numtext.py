"""Numbers, dates and times written as text, read the way Excel reads them.

VALUE(text), TEXT's text values and every coercion of text to a number (values.to_number)
read numbers as Excel does in an English (US) locale: "1,234.5", "$1,234", "(12)", "-5%",
"1E+3", " 12 ", a trailing minus; times "13:45", "1:45:10 PM", "1 PM"; dates "2024-01-15",
"1/15/2024", "1/15/24", "15-Jan-2024", "Jan 15, 2024", "January 15 2024", "Jan 2024", with
an optional time after the date; a date without a year ("1/15", "Jan-24") falls in the
current year. Anything else is not a number (None; #VALUE! to the caller).

This module imports nothing from the rest of xl2nn.functions, so values.py can use it.
"""
from __future__ import annotations

import datetime as dt
import math
import re

_NUMBER = re.compile(r"""
    (?P<sign>[+-])?\ *(?P<cur>\$)?\ *(?P<sign2>[+-])?\ *
    (?P<body>(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d*)?|\.\d+)
    (?:[eE](?P<exp>[+-]?\d+))?
    \ *(?P<pct>%)?\ *(?P<trail>-)?
""", re.X)
_TIME = re.compile(r"(?P<h>\d+)(?::(?P<m>\d{1,2})(?::(?P<s>\d{1,2}(?:\.\d+)?))?)? *(?P<ap>[AaPp][Mm])?")
_MONTHS = {m: i for i, name in enumerate(
    ("january", "february", "march", "april", "may", "june", "july", "august", "september",
     "october", "november", "december"), start=1) for m in (name, name[:3])} | {"sept": 9}
_DATES = [   # (pattern, the day when the text gives none); a month may be a name
    (re.compile(r"(?P<y>\d{4})-(?P<m>\d{1,2})-(?P<d>\d{1,2})"), None),
    (re.compile(r"(?P<m>\d{1,2})/(?P<d>\d{1,2})(?:/(?P<y>\d{4}|\d{2}))?"), None),
    (re.compile(r"(?P<d>\d{1,2})-(?P<m>[A-Za-z]+)-(?P<y>\d{4}|\d{2})"), None),
    (re.compile(r"(?P<m>[A-Za-z]+)\.? +(?P<d>\d{1,2}),? +(?P<y>\d{4})"), None),
    (re.compile(r"(?P<m>[A-Za-z]+)[- ](?P<y>\d{4})"), 1),        # "Jan 2024": the 1st
    (re.compile(r"(?P<m>[A-Za-z]+)-(?P<d>\d{1,2})"), None),       # "Jan-24": this year
]


def parse_number(s: str) -> float | None:
    """A number written as text, or None. See the module docstring for what is read."""
    s = s.strip(" ")
    if not s:
        return None
    got = _plain_number(s)
    if got is None and s.startswith("(") and s.endswith(")"):
        inner = _plain_number(s[1:-1].strip(" "), signed=False)
        got = None if inner is None else -inner
    if got is None:
        got = _date_time(s)
    return got


def _plain_number(s: str, signed: bool = True) -> float | None:
    m = _NUMBER.fullmatch(s)
    if not m:
        return None
    signs = [g for g in (m["sign"], m["sign2"], m["trail"]) if g]
    if len(signs) > 1 or (signs and not signed) or (m["exp"] and m["pct"]) or (m["pct"] and not signed):
        return None
    x = float(m["body"].replace(",", "") + (f"e{m['exp']}" if m["exp"] else ""))
    if math.isinf(x):
        return None                 # Excel's largest number is below 1E+308
    if m["pct"]:
        x /= 100.0
    return -x if signs == ["-"] else x


def _time_of(s: str) -> float | None:
    """A time of day as a fraction of a day (hours past 24 allowed, as Excel does)."""
    m = _TIME.fullmatch(s)
    if not m or (m["m"] is None and m["ap"] is None):
        return None
    h, mi = int(m["h"]), int(m["m"] or 0)
    sec = float(m["s"] or 0)
    if mi > 59 or sec >= 60:
        return None
    if m["ap"]:
        if h > 12:
            return None
        h = h % 12 + (12 if m["ap"].lower() == "pm" else 0)
    return (h * 3600 + mi * 60 + sec) / 86400.0


def serial(year: int, month: int, day: int) -> float | None:
    """Excel's 1900 date system, with its phantom 29 February 1900 (serial 60)."""
    if (year, month, day) == (1900, 2, 29):
        return 60.0
    try:
        d = dt.date(year, month, day)
    except ValueError:
        return None
    if year < 1900:
        return None
    n = (d - dt.date(1899, 12, 30)).days
    return float(n if n >= 61 else n - 1)


def _date_of(s: str) -> float | None:
    for pat, fixed_day in _DATES:
        m = pat.fullmatch(s)
        if not m:
            continue
        g = m.groupdict()
        month = _MONTHS.get(g["m"].lower()) if not g["m"].isdigit() else int(g["m"])
        if month is None:
            return None
        day = fixed_day or int(g["d"])
        y = g.get("y")
        year = dt.date.today().year if y is None else int(y)
        if y is not None and len(y) == 2:
            year += 2000 if year < 30 else 1900
        return serial(year, month, day)
    return None


def _date_time(s: str) -> float | None:
    t = _time_of(s)
    if t is not None:
        return t
    if s.startswith("-"):       # a negative time, as LibreOffice reads "-1:30"
        t = _time_of(s[1:].strip(" "))
        return None if t is None else -t
    d = _date_of(s)
    if d is not None:
        return d
    m = re.fullmatch(r"(.+?)(?: +|T)(\d+(?::\d.*)?(?: *[AaPp][Mm])?)", s)
    if m:
        d, t = _date_of(m[1]), _time_of(m[2])
        if d is not None and t is not None:
            return d + t
    return None


__all__ = ["parse_number", "serial"]
