"""The xlsx package: which zip part holds which sheet, read safely.

Shared by the reader and the writer so both agree on the package layout.
"""
from __future__ import annotations

import posixpath
import struct
import zipfile
import zlib
from dataclasses import dataclass

from defusedxml import DefusedXmlException
from defusedxml import ElementTree as SafeET

from .errors import BadInput

NS_MAIN = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
NS_REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
NS_PKG_REL = "http://schemas.openxmlformats.org/package/2006/relationships"
M = "{%s}" % NS_MAIN
R = "{%s}" % NS_REL
PR = "{%s}" % NS_PKG_REL

# Guard against zip bombs: no single part we parse may inflate beyond this.
MAX_PART_BYTES = 1 << 30

# What zipfile and zlib raise on a damaged, foreign or encrypted archive (zipfile has no one
# base class for these): each means "this file cannot be read", never a bug of ours.
ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, RuntimeError, EOFError,
              zlib.error, struct.error, ValueError)


@dataclass(frozen=True)
class SheetPart:
    name: str
    path: str          # zip member, e.g. "xl/worksheets/sheet1.xml"
    index: int         # position in the workbook (0-based), Excel's localSheetId
    state: str         # "visible", "hidden" or "veryHidden"


def rels_path(part: str) -> str:
    folder, base = posixpath.split(part)
    return posixpath.join(folder, "_rels", base + ".rels")


def resolve_target(part: str, target: str) -> str:
    if target.startswith("/"):
        return target.lstrip("/")
    return posixpath.normpath(posixpath.join(posixpath.dirname(part), target))


def read_part(zf: zipfile.ZipFile, path: str, file_label: str) -> bytes:
    try:
        info = zf.getinfo(path)
    except KeyError:
        raise BadInput(f"{file_label}: workbook part {path} is missing") from None
    if info.file_size > MAX_PART_BYTES:
        raise BadInput(f"{file_label}: part {path} would inflate to {info.file_size:,} bytes; refusing")
    try:
        return zf.read(path)
    except (OSError, *ZIP_ERRORS) as exc:     # OSError: a member's offset points outside the file
        raise BadInput(f"{file_label}: cannot read {path}: {why_unreadable(exc)}") from None


def parse_xml(data: bytes, file_label: str, path: str):
    try:
        return SafeET.fromstring(data)
    except Exception as exc:  # defusedxml raises several types, all mean "unusable"
        raise BadInput(f"{file_label}: cannot parse {path}: {why_unreadable(exc)}") from None


def why_unreadable(exc: Exception) -> str:
    """A part that cannot be read, in words: entity tricks and broken zips named as such."""
    if isinstance(exc, DefusedXmlException):
        return f"it declares XML entities or a DTD, which are refused (a possible entity bomb): {exc!r}"
    if isinstance(exc, ZIP_ERRORS):
        return f"the zip archive is damaged or uses a feature xl2nn cannot read ({exc})"
    return str(exc)


def part_relationships(zf: zipfile.ZipFile, part: str, file_label: str) -> dict[str, tuple[str, str]]:
    """rId -> (type, resolved target path) for one part; empty if it has no rels."""
    path = rels_path(part)
    if path not in zf.namelist():
        return {}
    root = parse_xml(read_part(zf, path, file_label), file_label, path)
    out: dict[str, tuple[str, str]] = {}
    for rel in root.iter(PR + "Relationship"):
        target = rel.get("Target", "")
        if rel.get("TargetMode") == "External":
            out[rel.get("Id", "")] = (rel.get("Type", ""), target)
        else:
            out[rel.get("Id", "")] = (rel.get("Type", ""), resolve_target(part, target))
    return out


def workbook_part(zf: zipfile.ZipFile, file_label: str) -> str:
    """The main workbook part, found through the package relationships."""
    for _rid, (typ, target) in part_relationships(zf, "", file_label).items():
        if typ.endswith("/officeDocument"):
            return target
    if "xl/workbook.xml" in zf.namelist():
        return "xl/workbook.xml"
    raise BadInput(f"{file_label}: not an Excel workbook (no workbook part in the package)")


def sheet_parts(zf: zipfile.ZipFile, file_label: str) -> list[SheetPart]:
    """Worksheets in workbook order (chartsheets and dialog sheets are skipped)."""
    wb = workbook_part(zf, file_label)
    root = parse_xml(read_part(zf, wb, file_label), file_label, wb)
    rels = part_relationships(zf, wb, file_label)
    out: list[SheetPart] = []
    sheets = root.find(M + "sheets")
    for index, el in enumerate(sheets if sheets is not None else []):
        rid = el.get(R + "id", "")
        typ, target = rels.get(rid, ("", ""))
        if not typ.endswith("/worksheet"):
            continue
        out.append(SheetPart(el.get("name", ""), target, index, el.get("state", "visible")))
    return out
