"""Sets of cells as few rectangles: '400 OFFSET cells' reads as 'data!B2:B401', not 400 names.

Pure Python on Areas, no torch: the CLI's listings, eval's warnings and the compiler's
messages all group the cells they name through here.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from .cells import Area, col_number

# 'sheet!A1', 'sheet!A1:B2', "'my sheet'!$A$1" as str(Area) writes them.
_AREA = re.compile(r"^(?:'((?:[^']|'')+)'|([^'!]+))!\$?([A-Za-z]{1,3})\$?(\d+)(?::\$?([A-Za-z]{1,3})\$?(\d+))?$")


def parse_area(text: str) -> Area | None:
    """str(Area) back to the Area; None for anything else (a message, a name)."""
    m = _AREA.match(text.strip())
    if not m:
        return None
    sheet = m.group(1).replace("''", "'") if m.group(1) is not None else m.group(2)
    r1, c1 = int(m.group(4)), col_number(m.group(3))
    r2, c2 = (int(m.group(6)), col_number(m.group(5))) if m.group(5) else (r1, c1)
    return Area(sheet, min(r1, r2), min(c1, c2), max(r1, r2), max(c1, c2))


def merge_areas(areas: Iterable[Area]) -> list[Area]:
    """As few rectangles as reasonable covering the same cells: side-by-side pieces with the
    same rows join into row runs, runs with the same columns in touching rows stack, and
    again until nothing joins. (Single cells: rows of runs, then runs stacked.) Not optimal
    for staircases, but copied formulas fill rectangles. Sorted by sheet (first seen), row,
    column."""
    by_sheet: dict[str, set[tuple[int, int, int, int]]] = {}
    for a in areas:
        by_sheet.setdefault(a.sheet, set()).add((a.r1, a.c1, a.r2, a.c2))
    out: list[Area] = []
    for sheet, boxes in by_sheet.items():
        while True:
            joined = _join(_join(boxes, across=True), across=False)
            if len(joined) == len(boxes):
                break
            boxes = joined
        out.extend(Area(sheet, *b) for b in sorted(boxes))
    return out


def _join(boxes: set[tuple[int, int, int, int]], across: bool) -> set[tuple[int, int, int, int]]:
    """Join boxes that span the same rows (across) or columns (down) and touch or overlap."""
    lines: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for r1, c1, r2, c2 in boxes:
        if across:
            lines.setdefault((r1, r2), []).append((c1, c2))
        else:
            lines.setdefault((c1, c2), []).append((r1, r2))
    out: set[tuple[int, int, int, int]] = set()
    for (a, b), spans in lines.items():
        spans.sort()
        lo, hi = spans[0]
        for s, e in spans[1:] + [(None, None)]:
            if s is not None and s <= hi + 1:
                hi = max(hi, e)
                continue
            out.add((a, lo, b, hi) if across else (lo, a, hi, b))
            if s is not None:
                lo, hi = s, e
    return out


def merge_texts(items: Sequence[str | Area]) -> list[str]:
    """Range texts (or Areas) merged into rectangles; texts that are not ranges kept, after."""
    areas, other = [], []
    for item in items:
        area = item if isinstance(item, Area) else parse_area(item)
        if area is None:
            other.append(str(item))
        else:
            areas.append(area)
    return [str(a) for a in merge_areas(areas)] + list(dict.fromkeys(other))


def ranges_text(items: Sequence[str | Area], most: int = 4) -> str:
    """'data!B2:B401, data!D2:D401' (merged), the first `most` and 'and N more'."""
    shown = merge_texts(items)
    more = f" and {len(shown) - most} more" if len(shown) > most else ""
    return ", ".join(shown[:most]) + more


__all__ = ["merge_areas", "merge_texts", "parse_area", "ranges_text"]
