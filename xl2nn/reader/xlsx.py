"""Read an .xlsx/.xlsm straight from its zip: values, formulas, cached values, tables, names.

We stream each sheet's XML rather than use openpyxl: openpyxl needs two full loads
to see formulas and cached values together, and it rejects parts we never use.
"""
from __future__ import annotations

import os
import zipfile
from pathlib import Path

from defusedxml.ElementTree import iterparse

from ..cells import Area, CellError, CellValue, a1, parse_a1
from ..errors import BadInput
from ..ooxml import (M, MAX_PART_BYTES, ZIP_ERRORS, parse_xml, part_relationships, read_part, sheet_parts, why_unreadable,
                     workbook_part)
from .workbook import DefinedName, Formula, Sheet, Table, Workbook

_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"


def _check_container(path: Path, label: str) -> None:
    if not path.exists():
        raise BadInput(f"{label}: no such file")
    if path.is_dir():
        raise BadInput(f"{label}: is a folder, not a workbook")
    with open(path, "rb") as fh:
        head = fh.read(8)
    if not head:
        raise BadInput(f"{label}: the file is empty")
    if head == _OLE_MAGIC:
        raise BadInput(f"{label}: a legacy .xls or password-protected workbook; "
                       "open it in Excel or LibreOffice and save it as .xlsx (without a password)")
    if path.suffix.lower() == ".xlsb":
        raise BadInput(f"{label}: binary .xlsb workbooks are not supported; save it as .xlsx")
    if not head.startswith(b"PK"):
        raise BadInput(f"{label}: not an .xlsx workbook (not a zip file)")


def read_workbook(path: str | os.PathLike[str]) -> Workbook:
    p = Path(path)
    label = str(path)
    _check_container(p, label)
    try:
        zf = zipfile.ZipFile(p)
    except (OSError, *ZIP_ERRORS) as exc:
        raise BadInput(f"{label}: not a readable .xlsx workbook ({exc})") from None
    with zf:
        total = sum(i.file_size for i in zf.infolist())
        if total > 8 * MAX_PART_BYTES:
            raise BadInput(f"{label}: the workbook would inflate to {total:,} bytes; refusing")
        shared = _shared_strings(zf, label)
        wb = Workbook(path=label, sheets={}, tables={}, names=_defined_names(zf, label))
        for part in sheet_parts(zf, label):
            sheet = Sheet(name=part.name, index=part.index, state=part.state)
            _read_sheet(zf, part.path, sheet, shared, label)
            wb.sheets[sheet.name] = sheet
            for table in _tables(zf, part.path, sheet.name, label):
                wb.tables[table.name.lower()] = table
        active = wb.sheet_by_index(_active_tab(zf, label))
        wb.active_sheet = active.name if active is not None else None
    return wb


def _active_tab(zf: zipfile.ZipFile, label: str) -> int:
    """The first workbook view's activeTab: the sheet Excel shows on open (0 when absent)."""
    wb = workbook_part(zf, label)
    view = next(parse_xml(read_part(zf, wb, label), label, wb).iter(M + "workbookView"), None)
    try:
        return int(view.get("activeTab", "0")) if view is not None else 0
    except ValueError:
        return 0


def _shared_strings(zf: zipfile.ZipFile, label: str) -> list[str]:
    wb = workbook_part(zf, label)
    path = next((t for typ, t in part_relationships(zf, wb, label).values()
                 if typ.endswith("/sharedStrings")), None)
    if path is None or path not in zf.namelist():
        return []
    root = parse_xml(read_part(zf, path, label), label, path)
    out = []
    for si in root.iter(M + "si"):
        # Plain <t>, or rich-text runs <r><t>; phonetic runs <rPh> are not the text.
        parts = [t.text or "" for t in si.findall(M + "t")]
        parts += [t.text or "" for r in si.findall(M + "r") for t in r.findall(M + "t")]
        out.append("".join(parts))
    return out


def _defined_names(zf: zipfile.ZipFile, label: str) -> list[DefinedName]:
    wb = workbook_part(zf, label)
    root = parse_xml(read_part(zf, wb, label), label, wb)
    out = []
    for el in root.iter(M + "definedName"):
        sid = el.get("localSheetId")
        out.append(DefinedName(name=el.get("name", ""), text=(el.text or "").strip(),
                               sheet_index=int(sid) if sid is not None else None,
                               hidden=el.get("hidden") in ("1", "true")))
    return out


def _tables(zf: zipfile.ZipFile, sheet_path: str, sheet_name: str, label: str) -> list[Table]:
    out = []
    for typ, target in part_relationships(zf, sheet_path, label).values():
        if not typ.endswith("/table") or target not in zf.namelist():
            continue
        root = parse_xml(read_part(zf, target, label), label, target)
        ref = root.get("ref", "")
        try:
            first, _, last = ref.partition(":")
            r1, c1 = parse_a1(first)
            r2, c2 = parse_a1(last or first)
        except ValueError:
            raise BadInput(f"{label}: table part {target} has a bad range {ref!r}") from None
        cols = [c.get("name", "") for c in root.iter(M + "tableColumn")]
        out.append(Table(name=root.get("displayName") or root.get("name", ""), sheet=sheet_name,
                         area=Area(sheet_name, r1, c1, r2, c2), columns=cols,
                         header_rows=int(root.get("headerRowCount", "1")),
                         totals_rows=int(root.get("totalsRowCount", "0"))))
    return out


def _cached(t: str | None, v: str | None, inline: str | None, shared: list[str]) -> CellValue:
    if t == "inlineStr":
        return inline if inline is not None else ""
    if v is None:
        return None
    if t == "s":
        return shared[int(v)]
    if t in ("str", "d"):
        return v
    if t == "b":
        return v.strip() in ("1", "true")
    if t == "e":
        return CellError(v)
    return float(v)


def _read_sheet(zf: zipfile.ZipFile, path: str, sheet: Sheet, shared: list[str], label: str) -> None:
    info = zf.getinfo(path) if path in zf.namelist() else None
    if info is None:
        raise BadInput(f"{label}: sheet {sheet.name!r} has no part {path}")
    if info.file_size > MAX_PART_BYTES:
        raise BadInput(f"{label}: sheet {sheet.name!r} would inflate to {info.file_size:,} bytes; refusing")
    masters: dict[str, tuple[str, tuple[int, int]]] = {}
    children: dict[tuple[int, int], str] = {}
    row_no = 0
    col_no = 0
    cell_tag, row_tag, v_tag, f_tag, is_tag = M + "c", M + "row", M + "v", M + "f", M + "is"
    data_tag = M + "sheetData"
    try:
        fh = zf.open(path)
    except (OSError, *ZIP_ERRORS) as exc:
        raise BadInput(f"{label}: cannot read sheet {sheet.name!r}: {why_unreadable(exc)}") from None
    with fh:
        try:
            for _event, el in iterparse(fh, events=("end",)):
                tag = el.tag
                if tag == cell_tag:
                    ref = el.get("r")
                    if ref:
                        row_no, col_no = parse_a1(ref)
                    else:
                        col_no += 1
                    pos = (row_no, col_no)
                    t = el.get("t")
                    v_el = el.find(v_tag)
                    is_el = el.find(is_tag)
                    inline = "".join(x.text or "" for x in is_el.iter(M + "t")) if is_el is not None else None
                    try:
                        value = _cached(t, v_el.text if v_el is not None else None, inline, shared)
                    except (ValueError, IndexError):
                        raise BadInput(f"{label}: {sheet.name}!{ref}: unreadable cell value") from None
                    if value is not None:
                        sheet.values[pos] = value
                    f_el = el.find(f_tag)
                    if f_el is not None:
                        _formula(f_el, pos, sheet, masters, children, label)
                    if pos[0] > sheet.max_row:
                        sheet.max_row = pos[0]
                    if pos[1] > sheet.max_col:
                        sheet.max_col = pos[1]
                    el.clear()
                elif tag == row_tag:
                    r = el.get("r")
                    row_no = int(r) if r else row_no + 1
                    col_no = 0
                    el.clear()
                elif tag == data_tag:
                    break       # the cells are all read; what follows (extensions) is not cells
        except BadInput:
            raise
        except Exception as exc:
            raise BadInput(f"{label}: cannot read sheet {sheet.name!r}: {why_unreadable(exc)}") from None
    for pos, si in children.items():
        if si not in masters:
            raise BadInput(f"{label}: {sheet.name}!{_a1(pos)}: shared formula {si} has no master")
        text, anchor = masters[si]
        sheet.formulas[pos] = Formula(text, anchor)


def _a1(pos: tuple[int, int]) -> str:
    return a1(*pos)


def _formula(f_el, pos: tuple[int, int], sheet: Sheet, masters: dict, children: dict, label: str) -> None:
    kind = f_el.get("t", "normal")
    text = (f_el.text or "").strip()
    if kind == "shared":
        si = f_el.get("si", "")
        if text:
            masters[si] = (text, pos)
            sheet.formulas[pos] = Formula(text, pos)
        else:
            children[pos] = si
        return
    if kind == "array":
        ref = f_el.get("ref") or _a1(pos)
        first, _, last = ref.partition(":")
        try:
            r1, c1 = parse_a1(first)
            r2, c2 = parse_a1(last or first)
        except ValueError:
            raise BadInput(f"{label}: {sheet.name}!{_a1(pos)}: bad array range {ref!r}") from None
        area = Area(sheet.name, r1, c1, r2, c2)
        sheet.arrays.append((area, text))
        for cell in area.cells():
            sheet.formulas[cell] = Formula(text, pos, area)
        if r2 > sheet.max_row:
            sheet.max_row = r2
        if c2 > sheet.max_col:
            sheet.max_col = c2
        return
    if kind == "dataTable":
        return  # What-If data tables: their cached values stand as constants
    if text:
        sheet.formulas[pos] = Formula(text, pos)
