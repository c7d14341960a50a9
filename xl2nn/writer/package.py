"""The package's bookkeeping parts (workbook, rels, content types, styles) and appended sheets."""
from __future__ import annotations

import posixpath
import re
import zipfile
from typing import Sequence
from xml.sax.saxutils import unescape

from ..errors import BadInput
from ..ooxml import M, NS_MAIN, NS_REL, parse_xml, part_relationships, read_part, rels_path, workbook_part
from .trace_sheet import (XML_DECL, NewSheet, chart_anchor, chart_xml, drawing_rels_xml, drawing_xml,
                          integral_column, sheet_rels_xml, sheet_xml, table_of, xml_escape)

CT_WORKSHEET = "application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"
CT_DRAWING = "application/vnd.openxmlformats-officedocument.drawing+xml"
CT_CHART = "application/vnd.openxmlformats-officedocument.drawingml.chart+xml"
CT_STYLES = "application/vnd.openxmlformats-officedocument.spreadsheetml.styles+xml"
CT_RELS = "application/vnd.openxmlformats-package.relationships+xml"
REL_WORKSHEET = NS_REL + "/worksheet"
REL_STYLES = NS_REL + "/styles"

# Number formats every Excel knows by id (locale-independent ones only).
BUILTIN_NUM_FMTS = {"General": 0, "0": 1, "0.00": 2, "#,##0": 3, "#,##0.00": 4, "0%": 9, "0.00%": 10,
                    "0.00E+00": 11, "@": 49}


def _root_prefix(text: str, local: str) -> str:
    m = re.search(r"<(?:([A-Za-z_][\w.-]*):)?%s[\s/>]" % local, text)
    return m.group(1) + ":" if m and m.group(1) else ""


def _rel_prefix(text: str, root_local: str) -> str | None:
    """The prefix bound to the relationships namespace on the root element, if any."""
    m = re.search(r"<(?:[\w.-]+:)?%s\b[^>]*>" % root_local, text)
    if not m:
        return None
    pm = re.search(r"""xmlns:([\w.-]+)\s*=\s*["']%s["']""" % re.escape(NS_REL), m.group(0))
    return pm.group(1) if pm else None


def _set_attr(tag: str, name: str, value: str) -> str:
    """Set attribute `name` in the start tag text `tag` (e.g. '<calcPr calcId="1"/>')."""
    m = re.search(r"""(\s%s\s*=\s*)(?:"[^"]*"|'[^']*')""" % re.escape(name), tag)
    if m:
        return tag[:m.start()] + f' {name}="{value}"' + tag[m.end():]
    end = len(tag) - (2 if tag.endswith("/>") else 1)
    while end > 0 and tag[end - 1].isspace():
        end -= 1
    return tag[:end] + f' {name}="{value}"' + tag[end:]


def _insert_before_close(text: str, close: str, snippet: str, where: str) -> str:
    pos = text.rfind(close)
    if pos < 0:
        raise BadInput(f"{where}: {close} not found")
    return text[:pos] + snippet + text[pos:]


# Children of <workbook> that come after <calcPr>, in schema order.
_AFTER_CALCPR = ("oleSize", "customWorkbookViews", "pivotCaches", "smartTagPr", "smartTagTypes",
                 "webPublishing", "fileRecoveryPr", "webPublishObjects", "extLst")


def _set_full_calc_on_load(wb: str, where: str) -> str:
    p = _root_prefix(wb, "workbook")
    ep = re.escape(p)
    m = re.search(r"<%scalcPr\b[^>]*?/?>" % ep, wb)
    if m:
        return wb[:m.start()] + _set_attr(m.group(0), "fullCalcOnLoad", "1") + wb[m.end():]
    snippet = f'<{p}calcPr fullCalcOnLoad="1"/>'
    positions = [mm.start() for name in _AFTER_CALCPR
                 for mm in [re.search(r"<%s%s\b" % (ep, name), wb)] if mm]
    if positions:
        pos = min(positions)
        return wb[:pos] + snippet + wb[pos:]
    return _insert_before_close(wb, f"</{p}workbook>", snippet, where)


def _set_count(text: str, start: int, end: int, n: int) -> str:
    """Set count="n" on the start tag text[start:end]."""
    return text[:start] + _set_attr(text[start:end], "count", str(n)) + text[end:]


class _Styles:
    """Appends number formats, a bold font and cell formats to styles.xml, by text splicing."""

    def __init__(self, text: str, where: str):
        self.text = text
        self.where = where
        self.p = _root_prefix(text, "styleSheet")
        self.cache: dict[tuple, int] = {}

    def _block(self, name: str) -> re.Match | None:
        ep = re.escape(self.p)
        return re.search(r"<%s%s\b([^>]*?)(?:/>|>(.*?)</%s%s>)" % (ep, name, ep, name), self.text, re.S)

    def _append_child(self, block: str, child_tag: str, snippet: str, before: tuple[str, ...] = ()) -> int:
        """Append `snippet` as the last child of <block>, update count, return the new child's index."""
        p = self.p
        ep = re.escape(p)
        m = self._block(block)
        if m is None:
            new = f'<{p}{block} count="1">{snippet}</{p}{block}>'
            pos = None
            for name in before:
                mm = re.search(r"<%s%s\b" % (ep, name), self.text)
                if mm:
                    pos = mm.start()
                    break
            if pos is None:
                raise BadInput(f"{self.where}: styles part has no <{block}> and no place to add one")
            self.text = self.text[:pos] + new + self.text[pos:]
            return 0
        inner = m.group(2) or ""
        n = len(re.findall(r"<%s%s\b" % (ep, child_tag), inner))
        start_tag_end = m.start(2) if m.group(2) is not None else None
        if start_tag_end is None:  # self-closing <block .../>
            tag = self.text[m.start():m.end()]
            tag = tag[:-2].rstrip() + ">"
            new = _set_attr(tag, "count", str(n + 1)) + snippet + f"</{p}{block}>"
            self.text = self.text[:m.start()] + new + self.text[m.end():]
            return n
        close = m.end(2)
        self.text = self.text[:close] + snippet + self.text[close:]
        self.text = _set_count(self.text, m.start(), m.start(2), n + 1)
        return n

    def num_fmt_id(self, code: str) -> int:
        if code in BUILTIN_NUM_FMTS:
            return BUILTIN_NUM_FMTS[code]
        key = ("fmt", code)
        if key in self.cache:
            return self.cache[key]
        ep = re.escape(self.p)
        m = self._block("numFmts")
        used = []
        if m is not None and m.group(2):
            for nm in re.finditer(r"<%snumFmt\b([^>]*)>" % ep, m.group(2)):
                idm = re.search(r"""numFmtId\s*=\s*["'](\d+)["']""", nm.group(1))
                cm = re.search(r"""formatCode\s*=\s*(?:"([^"]*)"|'([^']*)')""", nm.group(1))
                if not idm:
                    continue
                used.append(int(idm.group(1)))
                if cm and unescape(cm.group(1) or cm.group(2) or "", {"&quot;": '"', "&apos;": "'"}) == code:
                    self.cache[key] = int(idm.group(1))
                    return int(idm.group(1))
        new_id = max([163, *used]) + 1
        snippet = f'<{self.p}numFmt numFmtId="{new_id}" formatCode="{xml_escape(code, True)}"/>'
        if m is None:
            # numFmts is the first child of styleSheet
            rm = re.search(r"<%sstyleSheet\b[^>]*>" % ep, self.text)
            if rm is None:
                raise BadInput(f"{self.where}: styles part has no <styleSheet>")
            self.text = (self.text[:rm.end()] + f'<{self.p}numFmts count="1">{snippet}</{self.p}numFmts>'
                         + self.text[rm.end():])
        else:
            self._append_child("numFmts", "numFmt", snippet)
        self.cache[key] = new_id
        return new_id

    def bold_font_id(self) -> int:
        key = ("bold",)
        if key in self.cache:
            return self.cache[key]
        ep = re.escape(self.p)
        m = self._block("fonts")
        first = None
        if m is not None and m.group(2):
            first = re.search(r"<%sfont\b[^>]*?(?:/>|>.*?</%sfont>)" % (ep, ep), m.group(2), re.S)
        if first is None:
            font = f"<{self.p}font><{self.p}b/></{self.p}font>"
        else:
            f = first.group(0)
            f = re.sub(r"<%sb\b[^>]*?(?:/>|>\s*</%sb>)" % (ep, ep), "", f)
            if f.endswith("/>"):
                f = f[:-2].rstrip() + f"><{self.p}b/></{self.p}font>"
            else:
                gt = f.index(">") + 1
                f = f[:gt] + f"<{self.p}b/>" + f[gt:]
            font = f
        fid = self._append_child("fonts", "font", font, before=("fills", "borders", "cellStyleXfs", "cellXfs"))
        self.cache[key] = fid
        return fid

    def xf(self, num_fmt_id: int, font_id: int = 0) -> int:
        key = ("xf", num_fmt_id, font_id)
        if key in self.cache:
            return self.cache[key]
        has_style_xfs = self._block("cellStyleXfs") is not None
        extra = ' applyNumberFormat="1"' if num_fmt_id else ""
        if font_id:
            extra += ' applyFont="1"'
        xf_id = ' xfId="0"' if has_style_xfs else ""
        snippet = (f'<{self.p}xf numFmtId="{num_fmt_id}" fontId="{font_id}" fillId="0" borderId="0"'
                   f"{xf_id}{extra}/>")
        idx = self._append_child("cellXfs", "xf", snippet, before=("cellStyles", "dxfs", "tableStyles", "colors",
                                                                  "extLst"))
        self.cache[key] = idx
        return idx


MINIMAL_STYLES = (f'{XML_DECL}<styleSheet xmlns="{NS_MAIN}"><fonts count="1"><font><sz val="11"/>'
                  '<name val="Calibri"/><family val="2"/></font></fonts><fills count="2"><fill>'
                  '<patternFill patternType="none"/></fill><fill><patternFill patternType="gray125"/></fill></fills>'
                  '<borders count="1"><border><left/><right/><top/><bottom/><diagonal/></border></borders>'
                  '<cellStyleXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0"/></cellStyleXfs>'
                  '<cellXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0" xfId="0"/></cellXfs>'
                  '<cellStyles count="1"><cellStyle name="Normal" xfId="0" builtinId="0"/></cellStyles>'
                  "</styleSheet>")


class _Package:
    """The source package plus the parts we replace or add."""

    def __init__(self, zf: zipfile.ZipFile, label: str):
        self.zf = zf
        self.label = label
        self.names = zf.namelist()
        self.replaced: dict[str, bytes] = {}
        self.added: dict[str, bytes] = {}
        self.removed: set[str] = set()
        self.taken = {n.lower() for n in self.names}

    def get_text(self, path: str) -> str:
        if path in self.replaced:
            return self.replaced[path].decode("utf-8")
        if path in self.added:
            return self.added[path].decode("utf-8")
        data = read_part(self.zf, path, self.label)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise BadInput(f"{self.label}: part {path} is not UTF-8; cannot edit it") from None

    def put(self, path: str, data: bytes | str) -> None:
        if isinstance(data, str):
            data = data.encode("utf-8")
        if path in self.names:
            self.replaced[path] = data
        else:
            self.added[path] = data
            self.taken.add(path.lower())

    def exists(self, path: str) -> bool:
        return path in self.names or path in self.added

    def fresh(self, pattern: str) -> tuple[int, str]:
        """The smallest N >= 1 such that pattern % N names no part (nor content-type override)."""
        n = 1
        while (pattern % n).lower() in self.taken:
            n += 1
        path = pattern % n
        self.taken.add(path.lower())
        return n, path


def _fresh_rid(rels_text: str) -> str:
    ids = set(re.findall(r"""\sId\s*=\s*["']([^"']*)["']""", rels_text))
    nums = [int(m.group(1)) for i in ids for m in [re.fullmatch(r"rId(\d+)", i)] if m]
    n = max(nums, default=0) + 1
    while f"rId{n}" in ids:
        n += 1
    return f"rId{n}"


def _relative(from_part: str, to_part: str) -> str:
    return posixpath.relpath(to_part, posixpath.dirname(from_part) or ".")


def _drop_calc_chain(pkg: _Package, workbook: str) -> None:
    """Remove xl/calcChain.xml, its relationship and its content type: Excel's list of formula
    cells in calculation order names cells that no longer hold formulas once numbers are
    written over them, and Excel then reports the file damaged. Excel rebuilds the chain."""
    path = rels_path(workbook)
    if not pkg.exists(path):
        return
    text = pkg.get_text(path)
    rel = re.search(r"""<(?:\w+:)?Relationship\b[^>]*Type\s*=\s*["'][^"']*/calcChain["'][^>]*/>""", text)
    if rel is None:
        return
    target = re.search(r"""Target\s*=\s*["']([^"']*)["']""", rel.group(0))
    pkg.put(path, text[:rel.start()] + text[rel.end():])
    if target is None:
        return
    part = posixpath.normpath(posixpath.join(posixpath.dirname(workbook), unescape(target.group(1)))).lstrip("/")
    if target.group(1).startswith("/"):
        part = unescape(target.group(1)).lstrip("/")
    pkg.removed.add(part)
    types = pkg.get_text("[Content_Types].xml")
    pkg.put("[Content_Types].xml", re.sub(r"""<(?:\w+:)?Override\b[^>]*PartName\s*=\s*["']/%s["'][^>]*/>"""
                                          % re.escape(part), "", types, count=1))


def _add_relationship(pkg: _Package, owner: str, rel_type: str, target_part: str) -> str:
    path = rels_path(owner)
    if pkg.exists(path):
        text = pkg.get_text(path)
    else:
        text = f'{XML_DECL}<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">' \
               f"</Relationships>"
    rid = _fresh_rid(text)
    p = _root_prefix(text, "Relationships")
    snippet = (f'<{p}Relationship Id="{rid}" Type="{rel_type}" '
               f'Target="{xml_escape(_relative(owner, target_part), True)}"/>')
    if re.search(r"<%sRelationships\b[^>]*/>" % re.escape(p), text):
        text = re.sub(r"<(%sRelationships\b[^>]*?)\s*/>" % re.escape(p),
                      lambda m: f"<{m.group(1)}>{snippet}</{p}Relationships>", text, count=1)
    else:
        text = _insert_before_close(text, f"</{p}Relationships>", snippet, f"{pkg.label}: {path}")
    pkg.put(path, text)
    return rid


def _add_overrides(pkg: _Package, overrides: list[tuple[str, str]]) -> None:
    path = "[Content_Types].xml"
    text = pkg.get_text(path)
    p = _root_prefix(text, "Types")
    snippet = "".join(f'<{p}Override PartName="/{xml_escape(part, True)}" ContentType="{ct}"/>'
                      for part, ct in overrides)
    if not re.search(r"""<%sDefault\b[^>]*Extension\s*=\s*["']rels["']""" % re.escape(p), text, re.I):
        snippet = f'<{p}Default Extension="rels" ContentType="{CT_RELS}"/>' + snippet
    text = _insert_before_close(text, f"</{p}Types>", snippet, f"{pkg.label}: {path}")
    pkg.put(path, text)


def _override_names(pkg: _Package) -> set[str]:
    text = pkg.get_text("[Content_Types].xml")
    return {m.group(1).lstrip("/").lower()
            for m in re.finditer(r"""PartName\s*=\s*["']([^"']*)["']""", text)}


def _add_new_sheets(pkg: _Package, new_sheets: Sequence[NewSheet]) -> None:
    label = pkg.label
    wb_path = workbook_part(pkg.zf, label)
    wb_dir = posixpath.dirname(wb_path)
    root = parse_xml(pkg.get_text(wb_path).encode("utf-8"), label, wb_path)
    sheets_el = root.find(M + "sheets")
    existing = [el.get("name", "") for el in (sheets_el if sheets_el is not None else [])]
    sheet_ids = [int(el.get("sheetId")) for el in (sheets_el if sheets_el is not None else [])
                 if (el.get("sheetId") or "").isdigit()]
    taken_names = {n.lower() for n in existing}
    pkg.taken |= _override_names(pkg)

    tables = []
    for ns in new_sheets:
        rows = table_of(ns)
        if ns.name.lower() in taken_names:
            raise BadInput(f"{label}: the workbook already has a sheet named {ns.name!r}")
        taken_names.add(ns.name.lower())
        tables.append(rows)

    # styles
    rels = part_relationships(pkg.zf, wb_path, label)
    styles_path = next((t for typ, t in rels.values() if typ.endswith("/styles")), None)
    overrides: list[tuple[str, str]] = []
    if styles_path is None or not pkg.exists(styles_path):
        styles_path = styles_path or posixpath.join(wb_dir, "styles.xml")
        if styles_path.lower() in pkg.taken and not pkg.exists(styles_path):
            _, styles_path = pkg.fresh(posixpath.join(wb_dir, "styles%d.xml"))
        pkg.put(styles_path, MINIMAL_STYLES)
        _add_relationship(pkg, wb_path, REL_STYLES, styles_path)
        overrides.append((styles_path, CT_STYLES))
    styles = _Styles(pkg.get_text(styles_path), f"{label}: {styles_path}")

    wb = pkg.get_text(wb_path)
    wp = _root_prefix(wb, "workbook")
    rp = _rel_prefix(wb, "workbook")
    next_sheet_id = max(sheet_ids, default=0) + 1
    for ns, rows in zip(new_sheets, tables):
        fmt_id = styles.num_fmt_id(ns.number_format)
        data_style = styles.xf(fmt_id)
        first_style = styles.xf(1) if integral_column(rows, 0) else data_style
        header_style = styles.xf(0, styles.bold_font_id())

        _, sheet_path = pkg.fresh(posixpath.join(wb_dir, "worksheets", "sheet%d.xml"))
        overrides.append((sheet_path, CT_WORKSHEET))
        drawing_rid = None
        if ns.chart is not None and rows.shape[0] > 0:
            n_d, drawing_path = pkg.fresh(posixpath.join(wb_dir, "drawings", "drawing%d.xml"))
            _, chart_path = pkg.fresh(posixpath.join(wb_dir, "charts", "chart%d.xml"))
            drawing_rid = "rId1"
            col0, row0 = chart_anchor(ns)
            pkg.put(drawing_path, drawing_xml(col0, row0, "rId1", "Chart 1"))
            pkg.put(rels_path(drawing_path), drawing_rels_xml("rId1", _relative(drawing_path, chart_path)))
            pkg.put(chart_path, chart_xml(ns, rows))
            pkg.put(rels_path(sheet_path), sheet_rels_xml(drawing_rid, _relative(sheet_path, drawing_path)))
            overrides += [(drawing_path, CT_DRAWING), (chart_path, CT_CHART)]
        pkg.put(sheet_path, sheet_xml(ns, rows, header_style=header_style, data_style=data_style,
                                      first_col_style=first_style, drawing_rid=drawing_rid))

        rid = _add_relationship(pkg, wb_path, REL_WORKSHEET, sheet_path)
        if rp:
            rid_attr = f'{rp}:id="{rid}"'
        else:
            rid_attr = f'xmlns:r="{NS_REL}" r:id="{rid}"'
        wb = _insert_before_close(wb, f"</{wp}sheets>",
                                  f'<{wp}sheet name="{xml_escape(ns.name, True)}" sheetId="{next_sheet_id}" '
                                  f"{rid_attr}/>", f"{label}: {wb_path}")
        next_sheet_id += 1
    pkg.put(wb_path, wb)
    pkg.put(styles_path, styles.text)
    _add_overrides(pkg, overrides)
