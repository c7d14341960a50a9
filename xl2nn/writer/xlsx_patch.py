"""Write values back into a copy of an .xlsx, changing nothing else.

The package is copied member by member; only the worksheets that receive updates and, when
new sheets are appended or a recalculation is requested, the bookkeeping parts (workbook.xml,
its rels, [Content_Types].xml, styles.xml) are rewritten, and those only by splicing text into
the original bytes: no XML tree round trip (which would rename namespace prefixes, reorder
attributes and drop markup Excel needs).
"""
from __future__ import annotations

import shutil
import time
import zipfile
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..cells import CellValue
from ..errors import BadInput
from ..ooxml import ZIP_ERRORS, why_unreadable, read_part, sheet_parts, workbook_part
from .atomic import atomic_output, same_file
from .columns import CellColumns, cell_keys, splice_numbers
from .package import _Package, _add_new_sheets, _drop_calc_chain, _set_full_calc_on_load
from .sheet_patch import _SheetPatch, _Val, _check_updates
from .trace_sheet import LineChart, NewSheet, table_of

__all__ = ["patch_workbook", "CellColumns", "NewSheet", "LineChart"]

# Rewritten parts larger than this are deflated at level 1 (about 4x faster than the default 6).
FAST_DEFLATE_BYTES = 16 << 20


# =========================================================================== zip output

def _clone_info(info: zipfile.ZipInfo) -> zipfile.ZipInfo:
    zi = zipfile.ZipInfo(info.filename, info.date_time)
    zi.compress_type = info.compress_type
    zi.comment = info.comment
    zi.create_system = info.create_system
    zi.external_attr = info.external_attr
    return zi


def _write_package(zf: zipfile.ZipFile, tmp_fh, replaced: Mapping[str, bytes], added: Mapping[str, bytes],
                   removed: frozenset[str] | set[str] = frozenset()) -> None:
    with zipfile.ZipFile(tmp_fh, "w", allowZip64=True) as out:
        out.comment = zf.comment
        for info in zf.infolist():
            if info.filename in removed:
                continue
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
    if same_file(src, dst):
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
        if any(len(v) > 3 for vals in checked.values() for v in vals.values()):
            _drop_calc_chain(pkg, workbook_part(zf, label))    # formulas replaced by numbers
        if recalc_on_open:
            wb_path = workbook_part(zf, label)
            pkg.put(wb_path, _set_full_calc_on_load(pkg.get_text(wb_path), f"{label}: {wb_path}"))

        with atomic_output(dst) as fh:
            try:
                _write_package(zf, fh, pkg.replaced, pkg.added, pkg.removed)
            except ZIP_ERRORS as exc:
                raise BadInput(f"{label}: cannot copy the workbook: {why_unreadable(exc)}") from None
