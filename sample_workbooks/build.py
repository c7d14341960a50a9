"""Build the sample workbooks: `python sample_workbooks/build.py` (needs openpyxl and LibreOffice).

1. openpyxl writes each workbook: data, formulas, tables, Excel Solver's names; no cached values.
2. LibreOffice recalculates them all, headless, in one soffice run: a spreadsheet engine we did not
   write computes every cached value.
3. LibreOffice's own saved copy is not kept: it drops the hidden flag of Solver's names and the
   table styles. Only its cached values are taken, and xl2nn.writer.patch_workbook writes them into
   the openpyxl file, whose other bytes stay as openpyxl wrote them.
4. Checks: every formula cell got a number from LibreOffice; tables, Solver names and the array
   formula survived; `xl2nn verify` passes (and the `verify --grad` checks xl2nn.toml declares); each file < 1 MB.
"""
from __future__ import annotations

import argparse
import io
import re
import sys
import tempfile
import time
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))          # xl2nn from this checkout, even when not installed

from openpyxl import Workbook                                    # noqa: E402

from common import FIXED_TIME                                    # noqa: E402
import backprop                                                  # noqa: E402
import collab                                                    # noqa: E402
import forward                                                   # noqa: E402
import synthetic                                                 # noqa: E402
import titanic                                                   # noqa: E402
from xl2nn.app.declared import declared_checks                   # noqa: E402
from xl2nn.api import load                                       # noqa: E402
from xl2nn.compiler.grid import recalculate                      # noqa: E402
from xl2nn.compiler.lower import compile_model                   # noqa: E402
from xl2nn.compiler.model import find_model                      # noqa: E402
from xl2nn.handgrad import check_hand_gradients, parse_ranges    # noqa: E402
from tests.libreoffice import find_soffice, recalculate_many     # noqa: E402
from xl2nn.reader import read_workbook                           # noqa: E402
from xl2nn.verify import check_gradients, check_values           # noqa: E402
from xl2nn.writer import patch_workbook                          # noqa: E402

MAX_BYTES = 1 << 20
# The samples with Excel Solver models (hidden solver_* names) and with Excel tables.
SOLVER = {"titanic", "linear_regression", "softmax_regression", "sgd_by_hand", "convolution", "collab_filter"}
TABLES = {"titanic", "linear_regression", "softmax_regression"}


def workbooks() -> dict[str, Workbook]:
    return {
        "titanic": titanic.build(HERE / "data" / "titanic.csv"),
        "linear_regression": synthetic.linear_regression(),
        "softmax_regression": synthetic.softmax_regression(),
        "sgd_by_hand": synthetic.sgd_by_hand(),
        "convolution": synthetic.convolution(),
        "forward_pass": forward.build(),
        "backprop": backprop.build(),
        "collab_filter": collab.build(),
    }


def save_stable(wb: Workbook, path: Path) -> None:
    """openpyxl's save, with the date it stamps (file times, docProps 'modified') fixed, so a
    rebuild from the same inputs gives the same bytes."""
    buf = io.BytesIO()
    wb.save(buf)
    stamp = FIXED_TIME.strftime("%Y-%m-%dT%H:%M:%SZ")
    with zipfile.ZipFile(buf) as zin, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename == "docProps/core.xml":
                data = re.sub(rb"(<dcterms:modified[^>]*>)[^<]*", rb"\g<1>" + stamp.encode(), data)
            zout.writestr(zipfile.ZipInfo(info.filename, FIXED_TIME.timetuple()[:6]), data,
                          compress_type=zipfile.ZIP_DEFLATED)


def libreoffice_values(built: Path, recalculated: Path) -> dict[str, dict[tuple[int, int], float]]:
    """LibreOffice's value of every formula cell of `built` (array ranges: every cell), by sheet."""
    ours, theirs = read_workbook(built), read_workbook(recalculated)
    updates: dict[str, dict[tuple[int, int], float]] = {}
    for name, sheet in ours.sheets.items():
        lo = theirs.sheets[name]
        cells = set(sheet.formulas)
        for area, _ in sheet.arrays:
            cells.update(area.cells())
        for pos in sorted(cells):
            v = lo.values.get(pos)
            if not isinstance(v, float):
                raise SystemExit(f"build: LibreOffice gave {name}!{_a1(pos)} the value {v!r}, not a number")
            updates.setdefault(name, {})[pos] = v
    return updates


def check(path: Path, stem: str) -> list[str]:
    """xl2nn verify on the final file, and that Excel's parts survived. Returns report lines."""
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise SystemExit(f"build: {path.name} is {size:,} bytes, over {MAX_BYTES:,}")
    wb, graph = load(path)
    recalc = recalculate(wb, graph)
    values = check_values(wb, recalc)
    bad = [v for v in values if not v.ok] + ([recalc.skipped] if recalc.skipped else [])
    if bad:
        raise SystemExit(f"build: {path.name}: xl2nn disagrees with LibreOffice: {bad}")
    lines = [f"{path.name}: {size / 1024:,.0f} KiB, " + ", ".join(
        f"{v.sheet} {v.checked:,} cells max rel {v.max_rel:.2g}" for v in values)]
    hidden = {n.name for n in wb.names if n.name.startswith("solver_") and n.hidden}
    for sheet in _solver_sheets(wb):
        spec = find_model(wb, sheet)
        grads = check_gradients(compile_model(wb, graph, spec))
        if not grads.ok:
            raise SystemExit(f"build: {path.name}: gradient check failed on {sheet}")
        lines.append(f"  {sheet}: Solver model {spec.objective_name} = {grads.objective:.10g}, "
                     f"{len(grads.checks)} gradients ok (max rel {grads.worst.rel:.2g})")
    if stem in SOLVER and not {"solver_opt", "solver_adj", "solver_typ"} <= hidden:
        raise SystemExit(f"build: {path.name}: Solver's names are missing or not hidden")
    if not wb.tables and stem in TABLES:
        raise SystemExit(f"build: {path.name}: the tables are missing")
    if stem == "titanic" and not wb.sheets["mmult"].arrays:
        raise SystemExit(f"build: {path.name}: the MMULT array formula is missing")
    if stem == "convolution" and len(wb.sheets["conv"].arrays) != 100:
        raise SystemExit(f"build: {path.name}: the feature map's 100 array formulas are missing")
    # the hand-written derivative checks sample_workbooks/xl2nn.toml declares for it
    for d in declared_checks(HERE / f"{stem}.xlsx", HERE):
        grad, of, wrt = d.get("grad"), d.get("of"), d.get("wrt")
        report = check_hand_gradients(wb, recalc.grids, *parse_ranges(wb, grad, of, wrt, d.get("sheet")))
        if not report.ok:
            raise SystemExit(f"build: {path.name}: verify --grad {grad} failed: {report.failures[0].problem}")
        rows, cols = report.shape
        size = f"{rows} rows" + (f" × {cols} columns" if cols > 1 else "")
        lines.append(f"  verify --grad {grad} --of {of} --wrt {wrt}: {size} ok (max rel {report.worst.rel:.2g})")
    return lines


def _solver_sheets(wb) -> list[str]:
    from xl2nn.compiler.model import solver_sheets
    return solver_sheets(wb)


def _a1(pos: tuple[int, int]) -> str:
    from xl2nn.cells import a1
    return a1(*pos)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Build the sample workbooks (cached values by LibreOffice).")
    ap.add_argument("--out", type=Path, default=HERE, help="folder to write them to (default: beside this "
                    "script, where they are committed)")
    ap.add_argument("--only", nargs="+", metavar="STEM", help="build only these, e.g. --only sgd_by_hand")
    args = ap.parse_args(argv)
    out = args.out
    if find_soffice() is None:
        print("build: LibreOffice (soffice) is needed to compute the cached values", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="xl2nn-samples-") as tmp:
        work = Path(tmp)
        books = workbooks()
        if args.only:
            unknown = set(args.only) - set(books)
            if unknown:
                print(f"build: no sample named {', '.join(sorted(unknown))}; samples: {', '.join(books)}",
                      file=sys.stderr)
                return 2
            books = {stem: wb for stem, wb in books.items() if stem in args.only}
        for stem, wb in books.items():
            save_stable(wb, work / f"{stem}.xlsx")
        recalculate_many([(work / f"{s}.xlsx", work / f"{s}.lo.xlsx") for s in books], timeout=600)
        for stem in books:
            final = out / f"{stem}.xlsx"
            patch_workbook(work / f"{stem}.xlsx", final,
                           libreoffice_values(work / f"{stem}.xlsx", work / f"{stem}.lo.xlsx"))
            print("\n".join(check(final, stem)))
    print(f"built {len(books)} workbooks in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
