"""xl2nn at scale: titanic-style `nnet` workbooks of 1k, 10k and 100k rows (made by
big_workbook.py, not committed) against LibreOffice and a hand-written PyTorch module.

For each size (Excel's spelling) it measures, in fresh processes:
  - wall time and peak memory of `xl2nn inspect`, `xl2nn verify` and `xl2nn train --steps 1`
    (the last includes writing the trained workbook);
  - LibreOffice's headless recalculation and save of the same file (forced full recalc);
  - the phases inside one run: load (read + families), compile (lower + trace), one SGD step
    (median), verify (recompute and compare every cell, check the gradient) and write;
  - one SGD step of the compiled program against a hand-written nn.Module on the same tensors.
Then the same model as every writer saves it (--flavours, at --flavour-rows): `inspect`,
`train --steps 1` with write-back and LibreOffice's recalc+save of that very file, and the
time `train` takes to report a #VALUE! that reaches the objective (big_workbook --broken).
With --million, the same at 1,048,576 rows (Excel's limit), Excel's and openpyxl's spelling.
It prints the tables, the ratios the targets are stated in, and the time per row.

    python benchmarks/scale.py [--rows 1000 10000 100000] [--flavours ...] [--flavour-rows 100000]
                               [--million] [--keep DIR] [--no-libreoffice]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import big_workbook  # noqa: E402


def timed_process(cmd: list[str], expect: int = 0) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MiB) and stdout (stderr when it fails as expected) of a command
    run to completion; it must exit with `expect`."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    out = proc.stdout.read().decode()
    err = proc.stderr.read().decode()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != expect:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {err.strip()[-500:]}")
    return wall, usage.ru_maxrss / 1024, out if expect == 0 else err


PHASES = r"""
import json, sys, time
import torch
from pathlib import Path
t0 = time.perf_counter()
from xl2nn.reader import read_workbook
from xl2nn.ir.graph import build_graph
from xl2nn.compiler.model import find_model
from xl2nn.compiler.lower import compile_model
from xl2nn.compiler.grid import recalculate
from xl2nn.compiler.program import Program
from xl2nn.verify import check_values, check_gradients
from xl2nn.writeback import parameter_cells, write_trained
src, dst = Path(sys.argv[1]), Path(sys.argv[2])
t = time.perf_counter(); wb = read_workbook(src); graph = build_graph(wb); load = time.perf_counter() - t
t = time.perf_counter(); spec = find_model(wb, None, None, None); model = compile_model(wb, graph, spec)
program = Program(model); compile_s = time.perf_counter() - t
params = list(model.parameters()); opt = torch.optim.SGD(params, lr=0.01)
steps = []
for _ in range(12):
    t = time.perf_counter(); opt.zero_grad(); program().backward(); opt.step(); steps.append(time.perf_counter() - t)
step = sorted(steps[2:])[len(steps[2:]) // 2]
t = time.perf_counter(); recalc = recalculate(wb, graph); sheets = check_values(wb, recalc)
grads = check_gradients(compile_model(wb, graph, spec)); verify = time.perf_counter() - t
assert all(s.ok for s in sheets) and grads.ok
weights = {n: p.detach().cpu().numpy() for n, p in model.weights.items()}
t = time.perf_counter()
write_trained(src, dst, wb, graph, parameter_cells(model.param_areas, weights), list(model.param_areas.values()))
write = time.perf_counter() - t
print(json.dumps({"load": load, "compile": compile_s, "step": step, "verify": verify, "write": write}))
"""


def measure(rows: int, folder: Path, libreoffice: bool) -> dict:
    book = folder / f"nnet_{rows}.xlsx"
    if not book.exists():
        big_workbook.write(book, rows)
    xl = [sys.executable, "-m", "xl2nn.cli"]
    r: dict = {"rows": rows, "file_mib": book.stat().st_size / 2**20}
    for name, args in (("inspect", ["inspect", str(book)]), ("verify", ["verify", str(book)]),
                       ("train", ["train", str(book), "--steps", "1", "-o", str(folder / f"out_{rows}.xlsx")])):
        r["cli_" + name], r["cli_" + name + "_mib"], _ = timed_process(xl + args)
    wall, mib, out = timed_process([sys.executable, "-c", PHASES, str(book), str(folder / f"phase_{rows}.xlsx")])
    r.update(json.loads(out.strip().splitlines()[-1]))
    r["phases_mib"] = mib
    if libreoffice:
        r["libreoffice"] = libreoffice_seconds(book, folder / f"lo_{rows}.xlsx")
    from train_step import measure as step_ratio
    steps = max(3, min(300, 3_000_000 // rows))
    s = step_ratio(str(book), "nnet", None, steps=steps, blocks=7, interpreter=False)
    r["step_hand"] = s["hand-written"]["median"]
    r["step_xl2nn"] = s["xl2nn program"]["median"]
    return r


def libreoffice_seconds(book: Path, out: Path) -> float:
    """LibreOffice's forced full recalculation and save of `book`, in seconds (its own process)."""
    code = (f"import sys, time; sys.path.insert(0, {str(HERE.parent)!r}); from pathlib import Path; "
            "from tests.libreoffice import recalculate;"
            "t = time.perf_counter(); recalculate(Path(sys.argv[1]), Path(sys.argv[2]), timeout=3600);"
            "print(time.perf_counter() - t)")
    _, _, text = timed_process([sys.executable, "-c", code, str(book), str(out)])
    return float(text.strip().splitlines()[-1])


def measure_flavour(flavour: str, rows: int, folder: Path, libreoffice: bool, broken: bool = True) -> dict:
    """`inspect`, `train --steps 1` (with write-back) and LibreOffice's recalc+save of the model
    as `flavour` saves it; with `broken`, also how long `train` takes to report the #VALUE!."""
    book = folder / f"{flavour}_{rows}.xlsx"
    if not book.exists():
        big_workbook.write(book, rows, flavour=flavour)
    xl = [sys.executable, "-m", "xl2nn.cli"]
    r: dict = {"flavour": flavour, "rows": rows, "file_mib": book.stat().st_size / 2**20}
    r["inspect"], r["inspect_mib"], _ = timed_process(xl + ["inspect", str(book)])
    r["train"], r["train_mib"], _ = timed_process(xl + ["train", str(book), "--steps", "1",
                                                        "-o", str(folder / f"out_{flavour}_{rows}.xlsx")])
    if libreoffice:
        r["libreoffice"] = libreoffice_seconds(book, folder / f"lo_{flavour}_{rows}.xlsx")
    if rows > 1_000_000 and flavour == "excel":       # the step ratio holds at Excel's limit too
        from train_step import measure as step_ratio
        st = step_ratio(str(book), "nnet", None, steps=3, blocks=5, interpreter=False)
        r["step_hand"], r["step_xl2nn"] = st["hand-written"]["median"], st["xl2nn program"]["median"]
    if broken:
        bad = folder / f"{flavour}_{rows}_broken.xlsx"
        if not bad.exists():
            big_workbook.write(bad, rows, flavour=flavour, broken=True)
        r["error"], r["error_mib"], text = timed_process(
            xl + ["train", str(bad), "--steps", "1", "-o", str(folder / "never.xlsx")], expect=2)
        assert "#VALUE!" in text, text
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[1000, 10_000, 100_000])
    ap.add_argument("--keep", help="folder for the generated workbooks (default: a temporary one)")
    ap.add_argument("--no-libreoffice", action="store_true", help="skip LibreOffice's recalculation")
    ap.add_argument("--flavours", nargs="*", default=list(big_workbook.FLAVOURS), choices=big_workbook.FLAVOURS,
                    help="writers whose spelling of the model to measure (default: all)")
    ap.add_argument("--flavour-rows", type=int, nargs="+", default=[100_000])
    ap.add_argument("--million", action="store_true",
                    help="also 1,048,576 rows, Excel's and openpyxl's (write_only) spelling")
    args = ap.parse_args()
    sys.path.insert(0, str(HERE.parent))
    from tests.libreoffice import find_soffice
    libreoffice = not args.no_libreoffice and find_soffice() is not None
    with tempfile.TemporaryDirectory(prefix="xl2nn-scale-") as tmp:
        folder = Path(args.keep) if args.keep else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        results = []
        for n in args.rows:
            print(f"measuring {n:,} rows ...", file=sys.stderr, flush=True)
            results.append(measure(n, folder, libreoffice))
        flavours = []
        runs = [(f, n, True) for n in args.flavour_rows for f in args.flavours if f != "libreoffice" or libreoffice]
        if args.million:
            runs += [(f, 1_048_576 - 3, False) for f in ("excel", "openpyxl-write-only")]  # data from row 4
        for flavour, n, broken in runs:
            print(f"measuring {flavour} at {n:,} rows ...", file=sys.stderr, flush=True)
            flavours.append(measure_flavour(flavour, n, folder, libreoffice, broken))
            if n > 1_000_000:           # a million-row copy is large: keep the disk free
                for f in folder.glob(f"*_{flavour}_{n}.xlsx"):
                    f.unlink()          # the trained and LibreOffice copies; the input only if not --keep
                if not args.keep:
                    (folder / f"{flavour}_{n}.xlsx").unlink()
    report(results, libreoffice)
    report_flavours(flavours)


def report(results: list[dict], libreoffice: bool) -> None:
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores\n")
    print("| rows | file | load | compile | SGD step | verify | write | peak memory "
          "| `inspect` | `verify` | `train --steps 1` | LibreOffice recalc+save |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        lo = f"{r['libreoffice']:.2f} s" if libreoffice else "—"
        peak = max(r["cli_inspect_mib"], r["cli_verify_mib"], r["cli_train_mib"])
        print(f"| {r['rows']:,} | {r['file_mib']:.1f} MiB | {r['load']:.2f} s | {r['compile']:.2f} s "
              f"| {r['step'] * 1e3:.2f} ms | {r['verify']:.2f} s | {r['write']:.2f} s | {peak:,.0f} MiB "
              f"| {r['cli_inspect']:.2f} s | {r['cli_verify']:.2f} s | {r['cli_train']:.2f} s | {lo} |")
    print()
    for r in results:
        line = (f"{r['rows']:>7,} rows: step xl2nn / hand-written {r['step_xl2nn'] / r['step_hand']:.2f} "
                f"({r['step_xl2nn'] * 1e3:.3f} vs {r['step_hand'] * 1e3:.3f} ms)")
        if libreoffice:
            line += f"; train --steps 1 / LibreOffice {r['cli_train'] / r['libreoffice']:.2f}"
        line += (f"; per row: load {r['load'] / r['rows'] * 1e6:.1f} us, write {r['write'] / r['rows'] * 1e6:.1f} us, "
                 f"verify {r['verify'] / r['rows'] * 1e6:.1f} us")
        print(line)


def report_flavours(results: list[dict]) -> None:
    if not results:
        return
    print("\n| saved by | rows | file | `inspect` | `train --steps 1` + write | LibreOffice recalc+save "
          "| train / LibreOffice | peak memory | #VALUE! reported |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        lo = r.get("libreoffice")
        lo_text, ratio = (f"{lo:.2f} s", f"{r['train'] / lo:.2f}") if lo else ("—", "—")
        err = f"{r['error']:.2f} s" if "error" in r else "—"
        peak = max(r["inspect_mib"], r["train_mib"], r.get("error_mib", 0))
        print(f"| {r['flavour']} | {r['rows']:,} | {r['file_mib']:.1f} MiB | {r['inspect']:.2f} s "
              f"| {r['train']:.2f} s | {lo_text} | {ratio} | {peak:,.0f} MiB | {err} |")
    for r in results:
        if "step_hand" in r:
            print(f"\n{r['rows']:,} rows: step xl2nn / hand-written {r['step_xl2nn'] / r['step_hand']:.2f} "
                  f"({r['step_xl2nn'] * 1e3:.1f} vs {r['step_hand'] * 1e3:.1f} ms)")


if __name__ == "__main__":
    main()
