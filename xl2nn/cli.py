"""Command line: xl2nn inspect | eval | verify | train | export | import-weights."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from .errors import XlnnError

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="the workbook (.xlsx or .xlsm)")
    p.add_argument("--sheet", help="the sheet whose Solver model to use")
    p.add_argument("--params", help="parameter ranges, e.g. R4:AA5 or nnet!R4:AA5,nnet!R7")
    p.add_argument("--loss", help="the objective cell, e.g. AH1")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="xl2nn", description="Compile spreadsheet models to PyTorch, "
                                 "verify them against the sheet's own numbers, and train them.")
    ap.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("inspect", help="show the sheets, the model found and the compiled network")
    _model_args(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = sub.add_parser("eval", help="recalculate every formula cell and write a copy with the results")
    p.add_argument("file")
    p.add_argument("-o", "--output", required=True, help="the new workbook to write")
    p.add_argument("--strict", action="store_true", help="fail (exit 2, nothing written) when any cell "
                   "uses a function xl2nn does not implement, instead of keeping its cached value")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("verify", help="check recomputed cells against cached values and autograd "
                       "against finite differences")
    _model_args(p)
    p.add_argument("--json", action="store_true")
    p.add_argument("--values-only", action="store_true", help="skip the gradient check")
    p.add_argument("--grad", metavar="RANGE", help="hand-written derivative cells, e.g. K4:K33: cell k must "
                   "equal d(--of cell k)/d(--wrt cell k) by autograd (instead of the Solver gradient check)")
    p.add_argument("--of", metavar="RANGE", help="with --grad: the cells differentiated, e.g. F4:F33")
    p.add_argument("--wrt", metavar="RANGE", help="with --grad: the cells to differentiate with respect to, "
                   "e.g. C4:C33 (a formula cell is taken as given, a leaf)")

    p = sub.add_parser("train", help="train the model by gradient descent and write a copy with the "
                       "trained weights, recalculated cells and a sgd_steps trace sheet")
    _model_args(p)
    length = p.add_mutually_exclusive_group()
    length.add_argument("--steps", type=int, help="optimiser steps (default 1000)")
    length.add_argument("--epochs", type=int, help="passes over the rows (full batch: one step each)")
    p.add_argument("--lr", type=float, default=0.1, help="learning rate (default 0.1)")
    p.add_argument("--optimizer", choices=["sgd", "momentum", "adam"], default="sgd",
                   help="plain SGD (default), SGD with momentum 0.9, or Adam")
    p.add_argument("--batch-size", type=int, help="rows per step, sampled without replacement "
                   "(needs an objective that is a mean or sum over rows); default: full batch")
    p.add_argument("--init", choices=["workbook", "random"], default="workbook",
                   help="start from the workbook's weights (default) or uniform in [-0.5, 0.5)")
    p.add_argument("--seed", type=int, default=0, help="seed for --init random and batch sampling")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="auto: CUDA when available, else CPU")
    p.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    p.add_argument("--compile", action="store_true", help="torch.compile the traced model: faster steps on "
                   "big sheets (~30%% on a CPU at 10,000+ rows) after ~10 s of compiling")
    p.add_argument("--log-every", type=int, help="trace every K-th step (default: at most ~1,000 rows)")
    p.add_argument("-o", "--output", help="the new workbook (default: FILE's stem + .trained + its suffix, "
                   "beside it)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")

    p = sub.add_parser("export", help="write the compiled model as PyTorch source (.py), a state_dict "
                       "(.pt), safetensors (.safetensors) or ONNX (.onnx), by the output's suffix")
    _model_args(p)
    p.add_argument("-o", "--output", required=True, help="e.g. model.py, weights.pt, weights.safetensors, "
                   "model.onnx")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("import-weights", help="write weights trained elsewhere (.pt or .safetensors, "
                       "named as export names them) into the parameter cells of a copy of the workbook")
    _model_args(p)
    p.add_argument("weights", help="a state_dict: .pt (torch.save) or .safetensors")
    p.add_argument("-o", "--output", help="the new workbook (default: FILE's stem + .imported + its suffix, "
                   "beside it)")
    p.add_argument("--json", action="store_true")
    return ap


def _warning_line(message, category, filename, lineno, file=None, line=None) -> None:
    """Our own warnings (e.g. volatile cells used as snapshots) as one line each."""
    print(f"xl2nn: warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    if getattr(args, "file", None):
        from .reader import prefetch
        prefetch(args.file)          # read on a second core while torch imports
    import warnings
    from .compiler.lower import SnapshotWarning
    from .train import CompileWarning
    with warnings.catch_warnings():          # restores the filters and showwarning afterwards
        warnings.simplefilter("always", SnapshotWarning)
        warnings.simplefilter("always", CompileWarning)
        warnings.showwarning = _warning_line
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    try:
        return {"inspect": cmd_inspect, "eval": cmd_eval, "verify": cmd_verify,
                "train": cmd_train, "export": cmd_export,
                "import-weights": cmd_import_weights}[args.command](args)
    except XlnnError as exc:
        if args.debug:
            raise
        print(f"xl2nn: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("xl2nn: interrupted; nothing was written", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug of ours: still one line, --debug for the rest
        if args.debug:
            raise
        print(f"xl2nn: internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback)",
              file=sys.stderr)
        return 3


def cmd_inspect(args: argparse.Namespace) -> int:
    from .api import compile_workbook
    from .describe import summarize
    c = compile_workbook(args.file, args.sheet, args.params, args.loss)
    s = summarize(c.model)
    spec = c.spec
    if args.json:
        print(json.dumps({
            "sheets": [{"name": sh.name, "formula_cells": len(sh.formulas)} for sh in c.workbook.sheets.values()],
            "model": {"source": spec.source, "sheet": spec.sheet, "objective": spec.objective_name,
                      "sense": spec.sense, "target": spec.target,
                      "parameters": [{"name": n, "range": str(a), "shape": list(a.shape),
                                      "labels": c.model.param_labels[n]}
                                     for n, a in c.model.param_areas.items()]},
            "inputs": s.inputs,
            "layers": [vars(layer) for layer in s.layers],
            "formula_cells": s.formula_cells, "families": s.families, "tensor_ops": s.ops,
            "not_differentiable": s.flat,
        }, indent=2))
        return EXIT_OK
    print(f"workbook  {args.file}")
    print("sheets    " + ", ".join(f"{sh.name} ({len(sh.formulas):,} formulas)"
                                   for sh in c.workbook.sheets.values()))
    sense = {"min": "minimise", "max": "maximise", "value": f"reach {spec.target} with"}[spec.sense]
    print(f"model     {sense} {spec.objective_name}  ({spec.source})")
    if spec.note:
        print(f"          {spec.note}")
    for name, area in c.model.param_areas.items():
        h, w = area.shape
        labels = c.model.param_labels[name]
        shown = ", ".join(dict.fromkeys(labels))
        print(f"  param   {name}  {area}  {h}×{w}  [{shown}]")
    print("network")
    for inp in s.inputs:
        print(f"  input   {inp}")
    width = max((len(layer.cells) for layer in s.layers), default=10)
    for layer in s.layers:
        print(f"  {layer.cells:<{width}}  {layer.layer:<28} → {layer.shape:<8} {layer.formula}")
    print(f"size      {s.formula_cells:,} formula cells → {s.families} tensor families, "
          f"{s.ops} tensor ops per forward")
    if s.flat:
        print("zero grad " + _listing(s.flat) + ": not differentiable (piecewise constant), so "
              "no gradient flows through " + ("it" if len(s.flat) == 1 else "them"))
    return EXIT_OK


def cmd_eval(args: argparse.Namespace) -> int:
    from .api import recalculate_workbook
    from .errors import BadInput
    from .writeback import write_recalculated
    t0 = time.perf_counter()
    wb, graph, recalc = recalculate_workbook(args.file)
    missing, volatile, n_missing, n_volatile = recalc.not_recomputed(graph)
    kept = n_missing + n_volatile
    if missing and args.strict:
        raise BadInput(f"{args.file}: --strict: {n_missing:,} formula cells use what xl2nn does not implement: "
                       + _listing(missing))
    out = Path(args.output)
    written = write_recalculated(Path(args.file), out, wb, graph, recalc)
    if args.json:
        print(json.dumps({"output": str(out), "cells_written": written, "cells_kept": kept,
                          "unsupported": missing, "volatile": volatile,
                          "seconds": time.perf_counter() - t0}, indent=2))
    else:
        print(f"recalculated {written:,} formula cells in {time.perf_counter() - t0:.2f}s → {out}")
    if kept:
        parts = ([f"unsupported {_listing(missing)}"] if missing else []) + \
            ([f"volatile {_listing(volatile)} (a snapshot)"] if volatile else [])
        print(f"xl2nn: warning: {kept:,} formula cells kept their cached values: {'; '.join(parts)}",
              file=sys.stderr)
    return EXIT_OK


def _listing(by_name: dict[str, list[str]], most: int = 4) -> str:
    """'VLOOKUP (s!K1:K9, s!M2), FOO (s!A1 and 3 more)': each function with its cells."""
    items = []
    for name, areas in by_name.items():
        shown = ", ".join(areas[:most]) + (f" and {len(areas) - most} more" if len(areas) > most else "")
        items.append(f"{name} ({shown})")
    return ", ".join(items)


def cmd_verify(args: argparse.Namespace) -> int:
    from .api import load
    from .compiler.grid import recalculate
    from .compiler.lower import compile_model
    from .compiler.model import find_model
    from .errors import BadInput
    from .handgrad import check_hand_gradients, parse_ranges, report_lines
    from .verify import GRAD_RTOL, VALUE_RTOL, as_dict, check_gradients, check_trace, check_values
    wb, graph = load(args.file)
    hand_flags = (args.grad, args.of, args.wrt)
    spec = hand = None
    if any(hand_flags):                     # bad flags fail before the work
        if not all(hand_flags):
            raise BadInput("--grad, --of and --wrt go together, e.g. --grad K4:K33 --of F4:F33 --wrt C4:C33")
        if args.params or args.loss or args.values_only:
            raise BadInput("--grad checks hand-written derivatives; --params, --loss and --values-only belong to "
                           "the Solver-model check: give one or the other")
        areas = parse_ranges(wb, args.grad, args.of, args.wrt, args.sheet)
    else:
        spec = find_model(wb, args.sheet, args.params, args.loss)
    recalc = recalculate(wb, graph)
    skipped_cells = set()
    for fid in recalc.skipped:
        fam = graph.families[fid]
        rows, cols = fam.out_cells()
        skipped_cells.update((fam.sheet, int(r), int(c)) for r, c in zip(rows, cols))
    sheets = check_values(wb, recalc, skipped_cells)
    grads = trace = None
    if spec is None:
        hand = check_hand_gradients(wb, recalc.grids, *areas)
    elif not args.values_only:
        model = compile_model(wb, graph, spec)      # the workbook is read and parsed once
        grads = check_gradients(model)
        trace = check_trace(model)
    ok = all(s.ok for s in sheets) and (grads is None or grads.ok) and (hand is None or hand.ok) \
        and (trace is None or trace.ok)
    if args.json:
        print(json.dumps({
            "ok": ok, "objective": spec.objective_name if spec else None, "model_note": spec.note if spec else "",
            "values": [as_dict(s) for s in sheets], "value_rtol": VALUE_RTOL,
            "gradients": None if grads is None else {
                "ok": grads.ok, "objective_value": grads.objective, "rtol": GRAD_RTOL,
                "points": grads.points, "skipped_points": grads.skipped_points,
                "checks": [dict(vars(g), ok=g.ok) for g in grads.checks]},
            "trace": None if trace is None else dict(vars(trace), ok=trace.ok),
            "hand_gradients": hand.as_dict() if hand else None,
        }, indent=2))
        return EXIT_OK if ok else EXIT_FAILED
    if spec is not None and spec.note:
        print(f"model     {spec.objective_name} ({spec.source}): {spec.note}")
    print(f"values (recomputed vs cached, fail above rel {VALUE_RTOL:g})")
    for s in sheets:
        status = "ok  " if s.ok else "FAIL"
        extra = f", {s.skipped} not recomputed" if s.skipped else ""
        line = (f"  {status} {s.sheet:<12} {s.checked:>7,} cells  max abs {s.max_abs:.3g}  "
                f"max rel {s.max_rel:.3g}  worst {s.worst}{extra}")
        if not s.ok:
            line += (f"\n       {s.failed} cell(s) differ; worst {s.worst}: cached {s.worst_cached!r}, "
                     f"recomputed {s.worst_got!r}")
        print(line)
    if grads is not None:
        worst = grads.worst
        status = "ok  " if grads.ok else "FAIL"
        print(f"gradients of {spec.objective_name} (autograd vs central differences, "
              f"fail above rel {GRAD_RTOL:g})")
        n_params = sum(a.size for a in model.param_areas.values())
        at = f"{grads.points} weight point{'s' if grads.points != 1 else ''}" + (
            f" ({grads.skipped_points} more gave an error value)" if grads.skipped_points else "")
        print(f"  {status} {n_params} parameters at {at}  max rel {worst.rel if worst else 0:.3g}"
              + (f"  worst {worst.cell} ({worst.label}): autograd {worst.autograd:.10g}, "
                 f"finite difference {worst.finite_difference:.10g} (float64 noise of the "
                 f"difference: {worst.noise:.2g})" if worst else ""))
        for g in grads.checks:
            if not g.ok:
                print(f"       {g.cell} ({g.label}) at point {g.point}: autograd {g.autograd:.10g} vs "
                      f"{g.finite_difference:.10g}")
    if trace is not None:
        if trace.mode == "interpreted":
            print(f"traced program: none, train runs the interpreter (exact, slower): {trace.reason}")
        else:
            part = "" if trace.traced else " (these cells interpreted, the rest traced: " + trace.reason + ")"
            print(f"traced program vs interpreter{part}\n  {'ok  ' if trace.ok else 'FAIL'} {trace.points} "
                  f"weight points  max rel {trace.max_rel:.3g}")
    if hand is not None:
        print("\n".join(report_lines(hand)))
    print("verify: " + ("passed" if ok else "FAILED"))
    return EXIT_OK if ok else EXIT_FAILED


def default_output(src: Path, tag: str = "trained") -> Path:
    """titanic.xlsx -> titanic.trained.xlsx beside it; the suffix is kept (an .xlsm stays .xlsm,
    since its content type says macro-enabled and Excel refuses a mismatched suffix)."""
    return src.with_name(f"{src.stem}.{tag}{src.suffix}")


def _workbook_output(src: Path, given: str | None, tag: str = "trained") -> Path:
    from .errors import BadInput
    out = Path(given) if given else default_output(src, tag)
    if not out.parent.is_dir():
        raise BadInput(f"{out}: folder {out.parent} does not exist")
    if out.exists() and out.resolve() == src.resolve():
        raise BadInput(f"{out}: the output must be a new file, not the input")
    macro = {".xlsm", ".xltm"}
    if (src.suffix.lower() in macro) != (out.suffix.lower() in macro):
        raise BadInput(f"{out}: keep the input's kind of suffix ({src.suffix}); Excel refuses a "
                       f"{'macro-enabled' if src.suffix.lower() in macro else 'macro-free'} workbook "
                       f"saved as {out.suffix or 'no suffix'}")
    return out


def cmd_train(args: argparse.Namespace) -> int:
    import torch

    from .api import load, pick_device
    from .compiler.lower import compile_model
    from .compiler.model import find_model
    from .errors import BadInput
    from .progress import Progress
    from .train import TrainOptions, train, trace_sheet
    from .writeback import free_sheet_name, parameter_cells, sheet_names, write_trained
    t_start = time.perf_counter()
    src = Path(args.file)
    out = _workbook_output(src, args.output)       # a bad output path fails before the work
    if args.device == "cuda" and not torch.cuda.is_available():
        raise BadInput("--device cuda: CUDA is not available on this machine (torch sees no GPU)")
    device = pick_device(args.device)
    opts = TrainOptions(steps=args.steps, epochs=args.epochs, lr=args.lr, optimizer=args.optimizer,
                        batch_size=args.batch_size, init=args.init, seed=args.seed, log_every=args.log_every,
                        dtype=args.dtype, compile=args.compile)
    # Tracing the model (make_fx) imports torch._dynamo on first use: 1.6 s. Done now, it
    # overlaps the workbook being read on the other core (reader.prefetch).
    import torch._dynamo  # noqa: F401
    wb, graph = load(src)                                           # read and parse once
    spec = find_model(wb, args.sheet, args.params, args.loss)
    model = compile_model(wb, graph, spec, device)
    with Progress() as bar:                  # drawn only when stderr is a terminal
        result = train(model, opts, bar)
    values = parameter_cells(model.param_areas, result.weights)
    sheet, shown = trace_sheet(result, model, free_sheet_name(sheet_names(src), "sgd_steps"))
    written = write_trained(src, out, wb, graph, values, list(model.param_areas.values()), [sheet])
    cell = written.recalc.grids.value(*spec.objective)
    n_params = sum(a.size for a in model.param_areas.values())
    warnings = []
    if written.stale:
        also = written.stale_inputs
        warnings.append("kept stale cached values in cells that depend on the parameters but use functions "
                        "xl2nn does not implement: " + ", ".join(written.stale)
                        + (f"; cells computed from them are stale too: {', '.join(also[:10])}"
                           f"{' ...' if len(also) > 10 else ''}" if also else ""))
    if not isinstance(cell, float) or abs(cell - result.final_loss) > 1e-9 * max(abs(result.final_loss), 1e-300):
        warnings.append(f"the recalculated objective {spec.objective_name} = {cell!r} differs from the "
                        f"trained model's {result.final_loss!r}")
    if result.hint(args.lr):
        warnings.append(result.hint(args.lr))
    if shown < n_params:
        warnings.append(f"the trace sheet shows the first {shown} of {n_params} parameter cells "
                        "(Excel's column limit)")
    for w in warnings:
        print(f"xl2nn: warning: {w}", file=sys.stderr)
    summary = {
        "output": str(out), "objective": spec.objective_name, "sense": spec.sense, "target": spec.target,
        "start_loss": result.start_loss, "final_loss": result.final_loss,
        "steps": result.steps, "epochs": result.epochs, "seconds": result.seconds,
        "total_seconds": time.perf_counter() - t_start, "device": str(device), "dtype": args.dtype,
        "optimizer": args.optimizer, "lr": args.lr, "batch_size": result.batch_size,
        "rows": model.row_count, "init": args.init, "seed": args.seed, "log_every": result.log_every,
        "parameters": n_params, "trace_sheet": sheet.name, "trace_rows": len(sheet.rows),
        "cells_written": written.cells_written, "stale": written.stale,
        "stale_inputs": written.stale_inputs, "warnings": warnings,
        "got_worse": result.worse, "relu_units": result.relu_units,
        "inactive_relu_units": result.inactive or [], "interpreted": result.interpreted,
        "program": result.mode,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return EXIT_OK
    sense = {"min": "minimise", "max": "maximise", "value": f"reach {spec.target} with"}[spec.sense]
    batch = "full batch" if result.batch_size is None else f"batches of {result.batch_size} of {model.row_count} rows"
    init = "workbook weights" if args.init == "workbook" else f"random weights (seed {args.seed})"
    rate = result.steps / result.seconds if result.seconds > 0 else float("inf")
    print(f"trained   {sense} {spec.objective_name}: {n_params} parameters from {init}")
    if spec.note:
        print(f"          {spec.note}")
    epochs = "" if result.batch_size is None else f" ({result.epochs:g} epochs of {result.steps_per_epoch} steps)"
    print(f"used      {args.optimizer}, lr {args.lr:g}, {batch}, {result.steps:,} steps{epochs}, "
          f"{device} {args.dtype}")
    print(f"loss      {result.start_loss:.10g} → {result.final_loss:.10g}")
    print(f"time      {result.seconds:.2f} s training ({rate:,.0f} steps/s), "
          f"{summary['total_seconds']:.2f} s in all")
    if result.interpreted:
        how = "interpreted in part (exact; these cells slower, the rest traced)" if result.mode == "mixed" \
            else "interpreted, not traced (exact, slower)"
        print(f"          {how}: {result.interpreted}")
    n_rows = len(sheet.rows)
    every = "every step" if result.log_every == 1 else f"every {result.log_every} steps"
    print(f"wrote     {out}  ({written.cells_written:,} cells; trace sheet {sheet.name!r}: "
          f"{n_rows:,} row{'s' if n_rows != 1 else ''}, {every})")
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    from .api import compile_workbook
    from .export import export
    c = compile_workbook(args.file, args.sheet, args.params, args.loss)
    files = export(c.model, Path(args.output), args.file)
    names = {n: str(a) for n, a in c.model.param_areas.items()}
    if args.json:
        print(json.dumps({"files": [str(f) for f in files], "objective": c.spec.objective_name,
                          "parameters": names}, indent=2))
        return EXIT_OK
    print(f"exported  {c.spec.objective_name} and its {len(names)} parameter range(s): "
          + ", ".join(f"{n} = {a}" for n, a in names.items()))
    for f in files:
        print(f"wrote     {f}")
    return EXIT_OK


def cmd_import_weights(args: argparse.Namespace) -> int:
    from .export import write_weights
    src = Path(args.file)
    out = _workbook_output(src, args.output, "imported")   # a bad output path fails before the work
    written, spec = write_weights(src, Path(args.weights), out, args.sheet, args.params, args.loss)
    objective = written.recalc.grids.value(*spec.objective)
    for stale in written.stale:
        print(f"xl2nn: warning: kept a stale cached value (unsupported function): {stale}", file=sys.stderr)
    if args.json:
        print(json.dumps({"output": str(out), "objective": spec.objective_name, "objective_value": objective,
                          "cells_written": written.cells_written, "stale": written.stale}, indent=2))
        return EXIT_OK
    print(f"imported  {args.weights} into {spec.objective_name}'s parameter cells")
    print(f"objective {spec.objective_name} = {objective!r}")
    print(f"wrote     {out}  ({written.cells_written:,} cells)")
    return EXIT_OK


def run() -> None:
    """The console script: main(), then a hard exit. Tearing down the interpreter (freeing
    torch's modules and a big workbook's arrays) costs ~0.5 s and does nothing we need: the
    output files are already closed and renamed into place. (mypy exits the same way.)"""
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
