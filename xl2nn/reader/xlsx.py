"""Read an .xlsx/.xlsm straight from its zip: values, formulas, cached values, tables, names.

We stream each sheet's XML rather than use openpyxl: openpyxl needs two full loads
to see formulas and cached values together, and it rejects parts we never use.
"""
from __future__ import annotations

import io
import os
import pickle
import signal
import sys
import threading
import zipfile
from pathlib import Path

import numpy as np
from defusedxml.ElementTree import iterparse

from ..arrays import unique_inverse
from ..cells import Area, CellError, CellValue, a1, parse_a1
from ..errors import BadInput
from ..ooxml import (M, MAX_PART_BYTES, ZIP_ERRORS, parse_xml, part_relationships, read_part, sheet_parts, why_unreadable,
                     workbook_part)
from .scan import scan, sheet_data
from .workbook import CalcSettings, DefinedName, Formula, Sheet, Table, Workbook

_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"


def check_file(path: str | os.PathLike[str]) -> None:
    """Raise BadInput, naming the file, when `path` is not there or is not an .xlsx container."""
    _check_container(Path(path), str(path))


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


class _Prefetch:
    """A workbook being read on a helper thread while the main thread imports torch (2 s):
    NumPy's scanning releases the GIL, so the two overlap on a second core."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.key = _file_key(path)
        self.result: Workbook | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="xl2nn-read", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.result = _read(Path(self.path), self.path)
        except BaseException as exc:      # handed to the main thread, which raises it
            self.error = exc

    def get(self) -> Workbook:
        self.thread.join()
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


class _ForkedPrefetch:
    """The same, in a forked child: no GIL shared with the torch import at all. Only forked
    before torch (or any thread) exists; the workbook comes back pickled through a pipe."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.key = _file_key(path)
        read_end, write_end = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:                              # the child: read, send, leave
            os.close(read_end)
            code = 0
            try:
                try:
                    result: tuple = ("ok", _read(Path(path), path))
                except Exception as exc:
                    result = ("error", exc)
                with os.fdopen(write_end, "wb") as out:
                    pickle.dump(result, out, protocol=pickle.HIGHEST_PROTOCOL)
            except BaseException:
                code = 1
            os._exit(code)
        os.close(write_end)
        self.fd: int | None = read_end

    def get(self) -> Workbook:
        fd, self.fd = self.fd, None
        try:
            with os.fdopen(fd, "rb") as src:
                kind, value = pickle.load(src)
        except Exception:                             # cut short: the child died mid-way
            kind, value = "lost", None
        finally:
            os.waitpid(self.pid, 0)
        if kind == "error":
            raise value
        if kind != "ok":                               # the child died: read it here instead
            return _read(Path(self.path), self.path)
        return value

    def __del__(self) -> None:
        if self.fd is not None:                        # never collected: stop the child
            os.close(self.fd)
            try:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
            except (ChildProcessError, ProcessLookupError):
                pass


_prefetched: _Prefetch | _ForkedPrefetch | None = None


def _file_key(path: str) -> tuple | None:
    """The file as it is now: the same path (however spelled), size and modification time."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (os.path.realpath(path), st.st_size, st.st_mtime_ns)


def prefetch(path: str | os.PathLike[str]) -> None:
    """Start reading `path` in the background; the next read_workbook of it takes the result."""
    global _prefetched
    if not os.path.isfile(path):
        return
    # fork only while the process is single-threaded and torch-free (forking torch is unsafe)
    if hasattr(os, "fork") and "torch" not in sys.modules and threading.active_count() == 1:
        _prefetched = _ForkedPrefetch(str(path))
    else:
        _prefetched = _Prefetch(str(path))


def read_workbook(path: str | os.PathLike[str]) -> Workbook:
    global _prefetched
    pending, _prefetched = _prefetched, None
    if pending is not None and pending.key is not None and pending.key == _file_key(str(path)):
        wb = pending.get()
        wb.path = str(path)
        return wb
    return _read(Path(path), str(path))


def _read(p: Path, label: str) -> Workbook:
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
        dynamic = _dynamic_cell_metadata(zf, label)
        wb = Workbook(path=label, sheets={}, tables={}, names=_defined_names(zf, label))
        for part in sheet_parts(zf, label):
            sheet = Sheet(name=part.name, index=part.index, state=part.state)
            _read_sheet(zf, part.path, sheet, shared, label, dynamic)
            wb.sheets[sheet.name] = sheet
            for table in _tables(zf, part.path, sheet.name, label):
                wb.tables[table.name.lower()] = table
        active = wb.sheet_by_index(_active_tab(zf, label))
        wb.active_sheet = active.name if active is not None else None
        wb.calc = _calc_settings(zf, label)
    return wb


def _active_tab(zf: zipfile.ZipFile, label: str) -> int:
    """The first workbook view's activeTab: the sheet Excel shows on open (0 when absent)."""
    wb = workbook_part(zf, label)
    view = next(parse_xml(read_part(zf, wb, label), label, wb).iter(M + "workbookView"), None)
    try:
        return int(view.get("activeTab", "0")) if view is not None else 0
    except ValueError:
        return 0


def _calc_settings(zf: zipfile.ZipFile, label: str) -> CalcSettings:
    """<calcPr iterate iterateCount iterateDelta>: whether circular references are iterated, and
    how far. A value that is not a number keeps the default (as Excel does on opening)."""
    wb = workbook_part(zf, label)
    el = next(parse_xml(read_part(zf, wb, label), label, wb).iter(M + "calcPr"), None)
    if el is None:
        return CalcSettings()
    default = CalcSettings()
    try:
        count = min(32767, max(1, int(el.get("iterateCount", default.count))))   # Excel's range
    except ValueError:
        count = default.count
    try:
        delta = abs(float(el.get("iterateDelta", default.delta)))
    except ValueError:
        delta = default.delta
    if delta != delta:          # NaN
        delta = default.delta
    return CalcSettings(el.get("iterate", "0").strip().lower() in ("1", "true"), count, delta)


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


def _dynamic_cell_metadata(zf: zipfile.ZipFile, label: str) -> frozenset[str]:
    """The cm="k" values that mark a cell as a dynamic array: xl/metadata.xml's k-th
    <cellMetadata> block names (rc t, v) the XLDAPR metadata type and its v-th future-metadata
    block, whose dynamicArrayProperties say fDynamic="1". Excel 365 writes exactly one."""
    wb = workbook_part(zf, label)
    path = next((t for typ, t in part_relationships(zf, wb, label).values()
                 if typ.endswith("/sheetMetadata")), None)
    if path is None or path not in zf.namelist():
        return frozenset()
    root = parse_xml(read_part(zf, path, label), label, path)
    types = [el.get("name", "") for el in root.iter(M + "metadataType")]
    flags: list[bool] = []
    for fm in root.iter(M + "futureMetadata"):
        if fm.get("name") == "XLDAPR":
            for bk in fm.findall(M + "bk"):
                props = [el for el in bk.iter() if el.tag.endswith("}dynamicArrayProperties")]
                flags.append(bool(props) and props[0].get("fDynamic") in ("1", "true"))
    out = set()
    cell_md = root.find(M + "cellMetadata")
    for k, bk in enumerate(cell_md.findall(M + "bk") if cell_md is not None else [], start=1):
        for rc in bk.findall(M + "rc"):
            try:
                t, v = int(rc.get("t", "0")), int(rc.get("v", "0"))
            except ValueError:
                continue
            if 1 <= t <= len(types) and types[t - 1] == "XLDAPR" and 0 <= v < len(flags) and flags[v]:
                out.add(str(k))
    return frozenset(out)


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


def _read_sheet(zf: zipfile.ZipFile, path: str, sheet: Sheet, shared: list[str], label: str,
                dynamic: frozenset[str] = frozenset()) -> None:
    info = zf.getinfo(path) if path in zf.namelist() else None
    if info is None:
        raise BadInput(f"{label}: sheet {sheet.name!r} has no part {path}")
    if info.file_size > MAX_PART_BYTES:
        raise BadInput(f"{label}: sheet {sheet.name!r} would inflate to {info.file_size:,} bytes; refusing")
    try:
        data = read_part(zf, path, label)
    except BadInput:
        raise
    except (OSError, *ZIP_ERRORS) as exc:
        raise BadInput(f"{label}: cannot read sheet {sheet.name!r}: {why_unreadable(exc)}") from None
    sink = _Formulas(sheet, label, dynamic)
    found = _fast_read(data, sheet, shared, sink, (info.CRC, info.file_size))
    if not found:
        _parse_sheet(data, sheet, shared, sink, label)
    sink.finish()


def _fast_read(data: bytes, sheet: Sheet, shared: list[str], sink: "_Formulas", crc: tuple[int, int]) -> bool:
    """The NumPy scan of <sheetData> (see scan.py); False when the part needs the XML parser."""
    body = sheet_data(data)
    found = scan(data, *body, shared) if body is not None else None
    if found is None:
        return False
    sheet.spans = (crc, found.spans)       # the writer splices new values in at these places
    sheet.values.add_numbers(found.rows, found.cols, found.numbers)
    sheet.values.other.update(found.other)
    sheet.max_row = max(sheet.max_row, found.max_row)
    sheet.max_col = max(sheet.max_col, found.max_col)
    for pos, attrs, text in found.formulas:
        sink.formula(pos, attrs.get("t", "normal"), text or "", attrs.get("ref"), attrs.get("si", ""),
                     attrs.get("cm"))
    sink.children(found.child_rows, found.child_cols, found.child_si)
    for text, anchor, rows, cols in found.copies:
        sink.copies(text, anchor, rows, cols)
    return True


def _parse_sheet(data: bytes, sheet: Sheet, shared: list[str], sink: "_Formulas", label: str) -> None:
    """The XML parser's reading: any well-formed sheet, errors worded."""
    row_no = 0
    col_no = 0
    cell_tag, row_tag, v_tag, f_tag, is_tag = M + "c", M + "row", M + "v", M + "f", M + "is"
    data_tag = M + "sheetData"
    try:
        for _event, el in iterparse(io.BytesIO(data), events=("end",)):
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
                    v = v_el.text if v_el is not None else None
                    if v is None and v_el is not None and t == "str":
                        v = ""          # a formula's empty text result, <v></v>
                    value = _cached(t, v, inline, shared)
                except (ValueError, IndexError):
                    raise BadInput(f"{label}: {sheet.name}!{ref}: unreadable cell value") from None
                if value is not None:
                    sheet.values[pos] = value
                f_el = el.find(f_tag)
                if f_el is not None:
                    sink.formula(pos, f_el.get("t", "normal"), f_el.text or "", f_el.get("ref"), f_el.get("si", ""),
                                 el.get("cm"))
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


def _a1(pos: tuple[int, int]) -> str:
    return a1(*pos)


def _as_ints(si: np.ndarray) -> np.ndarray | None:
    try:
        ints = si.astype(np.int64)
    except ValueError:
        return None
    return ints if (ints.astype(str) == si.astype(str)).all() else None   # "007" is not "7"


class _Formulas:
    """Collects a sheet's formulas as they are read; shared-formula children are kept as
    arrays of (row, col, si) and joined to their master's template at the end."""

    def __init__(self, sheet: Sheet, label: str, dynamic: frozenset[str] = frozenset()) -> None:
        self.sheet = sheet
        self.label = label
        self.dynamic = dynamic          # the cm values that mean "a dynamic array"
        self.masters: dict[str, int] = {}
        self.child_rows: list[np.ndarray] = []
        self.child_cols: list[np.ndarray] = []
        self.child_si: list[np.ndarray] = []

    def children(self, rows: np.ndarray, cols: np.ndarray, si: np.ndarray) -> None:
        if len(rows):
            self.child_rows.append(rows)
            self.child_cols.append(cols)
            self.child_si.append(si)

    def copies(self, text: str, anchor: tuple[int, int], rows: np.ndarray, cols: np.ndarray) -> None:
        """Cells that each hold `text` moved from `anchor` to them (copies.py): one shared formula."""
        t = self.sheet.formulas.add_template(Formula(text, anchor))
        self.sheet.formulas.add_shared(t, rows, cols)

    def formula(self, pos: tuple[int, int], kind: str, text: str, ref: str | None, si: str,
                cm: str | None = None) -> None:
        sheet = self.sheet
        text = text.strip()
        if kind == "shared":
            if text:
                key = str(int(si)) if si.isdigit() else si      # children's si are read as numbers
                self.masters[key] = t = sheet.formulas.add_template(Formula(text, pos))
                sheet.formulas.add_shared(t, np.array([pos[0]]), np.array([pos[1]]))
            else:
                key = str(int(si)) if si.isdigit() else si
                self.children(np.array([pos[0]]), np.array([pos[1]]), np.array([key]))
            return
        if kind == "array":
            ref = ref or _a1(pos)
            first, _, last = ref.partition(":")
            try:
                r1, c1 = parse_a1(first)
                r2, c2 = parse_a1(last or first)
            except ValueError:
                raise BadInput(f"{self.label}: {sheet.name}!{_a1(pos)}: bad array range {ref!r}") from None
            area = Area(sheet.name, r1, c1, r2, c2)
            sheet.arrays.append((area, text))
            if cm is not None and cm in self.dynamic:
                sheet.dynamic.add((r1, c1))
            t = sheet.formulas.add_template(Formula(text, pos, area))
            rr, cc = np.meshgrid(np.arange(r1, r2 + 1), np.arange(c1, c2 + 1), indexing="ij")
            sheet.formulas.add_shared(t, rr.reshape(-1), cc.reshape(-1))
            sheet.max_row = max(sheet.max_row, r2)
            sheet.max_col = max(sheet.max_col, c2)
            return
        if kind == "dataTable":
            return  # What-If data tables: their cached values stand as constants
        if text:
            sheet.formulas.add(pos, Formula(text, pos))

    def finish(self) -> None:
        if not self.child_rows:
            return
        rows = np.concatenate(self.child_rows)
        cols = np.concatenate(self.child_cols)
        # si is a number in every file we have seen; the XML path reads it as text
        parts = [s if s.dtype.kind in "iu" else _as_ints(s) for s in self.child_si]
        si = np.concatenate(parts) if all(p is not None for p in parts) else \
            np.concatenate([s.astype(str) for s in self.child_si])
        keys, inverse = unique_inverse(si)
        order = np.argsort(inverse, kind="stable")
        bounds = np.searchsorted(inverse[order], np.arange(len(keys) + 1))
        for k, key in enumerate(keys.tolist()):
            take = order[bounds[k]:bounds[k + 1]]
            key = str(key)
            if key not in self.masters:
                pos = (int(rows[take[0]]), int(cols[take[0]]))
                raise BadInput(f"{self.label}: {self.sheet.name}!{_a1(pos)}: shared formula {key} has no master")
            self.sheet.formulas.add_shared(self.masters[key], rows[take], cols[take])
