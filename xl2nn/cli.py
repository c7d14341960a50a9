"""Command line: xl2nn inspect | eval | verify | train | export | import-weights."""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TYPE_CHECKING

from .app.common import default_output, listing
from .errors import XlnnError

if TYPE_CHECKING:
    from .app import EvalReport, ImportReport, InspectReport, ParamInfo, TrainReport, VerifyReport
    from .describe import Layer

__all__ = ["build_parser", "default_output", "main", "run"]

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

    p = sub.add_parser("inspect", help="show each sheet's computation as layers, the Solver models, and the "
                       "model xl2nn would compile (none needed)")
    _model_args(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = sub.add_parser("eval", help="recalculate every formula cell and write a copy with the results")
    p.add_argument("file")
    p.add_argument("-o", "--output", required=True, help="the new workbook to write")
    p.add_argument("--strict", action="store_true", help="write nothing and fail when any cell uses a function "
                   "xl2nn does not implement (exit 2) or any recomputed cell differs from the file's cached "
                   "value (exit 1), instead of keeping or warning")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("verify", help="check recomputed cells against cached values and autograd "
                       "against finite differences")
    _model_args(p)
    p.add_argument("--json", action="store_true")
    p.add_argument("--values-only", action="store_true", help="skip the gradient check")
    p.add_argument("--grad", metavar="RANGE[,RANGE]", help="hand-written derivative cells, a column (K4:K33) or "
                   "an R×P block (S4:Z53; ranges joined by commas are taken side by side): cell (k,j) must equal "
                   "d(--of cell k)/d(--wrt cell (k,j)) by autograd (instead of the Solver gradient check)")
    p.add_argument("--of", metavar="RANGE", help="with --grad: the cells differentiated, one per row (F4:F33), "
                   "one cell for every --grad cell (F1), one per column, or one per --grad cell")
    p.add_argument("--wrt", metavar="RANGE[,RANGE]", help="with --grad: the cells to differentiate with respect "
                   "to, shaped like --grad, e.g. C4:C33 or B4:E53,J4:M53 side by side (a formula cell is taken "
                   "as given, a leaf)")

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
    p.add_argument("--inputs", metavar="RANGE[,RANGE]", help="a forward export (no Solver model needed): "
                   "forward() takes these cells as arguments, one float64 tensor per range shaped like it "
                   "(a formula cell is taken as given); with --outputs")
    p.add_argument("--outputs", metavar="RANGE", help="with --inputs: the cells forward() returns, one tensor "
                   "shaped like the range; everything but --params is folded as constants")
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
        from .reader import check_file, prefetch
        try:
            check_file(args.file)    # a missing or non-workbook FILE is said at once, before torch loads
        except XlnnError as exc:
            print(f"xl2nn: error: {exc}", file=sys.stderr)
            return exc.exit_code
        prefetch(args.file)          # read on a second core while torch imports
    import warnings
    from .app.common import warning_categories
    categories = warning_categories()
    with warnings.catch_warnings():          # restores the filters and showwarning afterwards
        for category in categories:
            warnings.simplefilter("always", category)
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
    except BrokenPipeError:          # `xl2nn inspect FILE | head`: the reader has gone, so stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except Exception as exc:  # a bug of ours: still one line, --debug for the rest
        if args.debug:
            raise
        print(f"xl2nn: internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback)",
              file=sys.stderr)
        return 3


def _warn(message: str) -> None:
    print(f"xl2nn: warning: {message}", file=sys.stderr)


def _print_json(d: dict) -> None:
    print(json.dumps(d, indent=2))


def _sense(sense: str, target: float | None) -> str:
    return {"min": "minimise", "max": "maximise", "value": f"reach {target} with"}[sense]


def cmd_inspect(args: argparse.Namespace) -> int:
    from .app import inspect_workbook
    r = inspect_workbook(args.file, args.sheet, args.params, args.loss)
    if args.json:
        _print_json(r.as_dict())
    else:
        _print_inspect(r)
    return EXIT_OK


def _print_inspect(r: InspectReport) -> None:
    print(f"workbook  {r.path}")
    print("sheets    " + ", ".join(f"{sh.name} ({sh.formula_cells:,} formulas)" for sh in r.sheets))
    for sh in r.sheets:
        if sh.layers:
            n = sum(layer.families for layer in sh.layers)
            print(f"sheet     {sh.name}: {n:,} formula famil{'y' if n == 1 else 'ies'}, in dependency order")
            _print_layers(sh.layers, most=_MOST_LAYERS)
    for i, m in enumerate(r.solver_models):
        head = "solver    " if i == 0 else "          "
        if m.problem:
            print(f"{head}on {m.sheet}: {m.problem}")
        else:
            print(f"{head}{_sense(m.sense, m.target)} {m.objective} by changing {', '.join(m.parameters)}"
                  + ("  (the model below)" if m.used else ""))
    if r.spec is None:
        print(f"model     {r.no_model}")
    else:
        _print_model(r)
    if r.volatile:
        print(f"volatile  {listing(r.volatile)}: kept as their cached values (a snapshot)")
    if r.dropout:
        print(f"dropout   RAND in {', '.join(r.dropout)}, which the model reads: train draws them afresh each step "
              "(--seed); eval and verify use the saved values")
    if r.unsupported:
        print(f"unsupported {listing(r.unsupported)}: not implemented, kept as their cached values")
    for cells in r.circular:
        print(f"circular  {cells}: {r.iteration}")


_MOST_LAYERS = 40      # per sheet in the text listing; --json has every layer


def _print_layers(layers: list[Layer], most: int | None = None) -> None:
    shown = layers if most is None or len(layers) <= most else layers[:most - 1]
    cells = min(max((len(layer.cells) for layer in shown), default=10), 40)
    name = min(max(max((len(layer.layer) for layer in shown), default=0), 28), 36)
    for layer in shown:
        formula = layer.formula if len(layer.formula) <= 80 else layer.formula[:79] + "…"
        like = f"  ({layer.families:,} formulas like it)" if layer.families > 1 else ""
        print(f"  {layer.cells:<{cells}}  {layer.layer:<{name}} → {layer.shape:<8} {formula}{like}")
    if len(shown) < len(layers):
        print(f"  … {len(layers) - len(shown):,} more (--json lists them all)")


def _print_model(r: InspectReport) -> None:
    s, spec = r.summary, r.spec
    print(f"model     {_sense(spec.sense, spec.target)} {spec.objective_name}  ({spec.source})")
    if spec.note:
        print(f"          {spec.note}")
    for p in r.parameters:
        h, w = p.shape
        print(f"  param   {p.name}  {p.range}  {h}×{w}  {_param_labels(p)}")
    print("network")
    for inp in s.inputs:
        print(f"  input   {inp}")
    _print_layers(s.layers)
    print(f"size      {s.formula_cells:,} formula cells → {s.families} tensor families, "
          f"{s.ops} tensor ops per forward")
    if s.flat:
        print("zero grad " + listing(s.flat) + ": not differentiable (piecewise constant), so "
              "no gradient flows through " + ("it" if len(s.flat) == 1 else "them"))


def _param_labels(p: ParamInfo) -> str:
    """A block by its headers: '[w1, w2, b]' along a row or column, 'rows [..] × columns [..]'
    for a 2-D block; else the nearest text of each cell, as found."""
    h, w = p.shape
    if h == 1 and p.columns:
        return _short(p.columns)
    if w == 1 and p.rows:
        return _short(p.rows)
    if h > 1 and w > 1 and (p.rows or p.columns):
        return " × ".join(f"{axis} {_short(names)}" for axis, names in (("rows", p.rows), ("columns", p.columns))
                          if names)
    return _short(list(dict.fromkeys(p.labels)))


def _short(names: list[str], most: int = 12) -> str:
    """'[a, b, c]', or the first few and '… (10)' when there are more than `most`."""
    if len(names) <= most:
        return "[" + ", ".join(names) + "]"
    return "[" + ", ".join(names[:most - 2]) + f", … ({len(names)})]"


def cmd_eval(args: argparse.Namespace) -> int:
    from .app import eval_workbook
    r = eval_workbook(args.file, args.output, args.strict)
    if args.json:
        _print_json(r.as_dict())
    else:
        print(f"recalculated {r.cells_written:,} formula cells in {r.seconds:.2f}s → {r.output}")
        print(f"compared  {r.compared - r.disagreements:,} of {r.compared:,} recomputed cells agree with the "
              f"file's cached values (rel {r.value_rtol:g})" if r.compared else
              "compared  nothing: the file holds no cached numbers for its formula cells")
        if r.moved:
            print(f"          {r.moved:,} cells moved by iterative calculation (a cycle and what reads it) are not "
                  "compared: each recalculation moves them")
        for line in r.iterated:         # circular references, iterated from their cached values
            print(f"iterated  {line}")
    for s in r.differ:
        _warn(f"{s.failed:,} recomputed cell(s) of {s.sheet} differ from the file's cached values; first "
              f"{s.first_failure} {s.first_formula}: cached {s.first_cached!r}, recomputed {s.first_got!r}")
    _warn_kept(r)
    return EXIT_OK


def _warn_kept(r: EvalReport) -> None:
    if r.cells_kept:
        parts = ([f"unsupported {listing(r.unsupported)}"] if r.unsupported else []) + \
            ([f"volatile {listing(r.volatile)} (a snapshot)"] if r.volatile else []) + \
            ([listing(r.circular)] if r.circular else [])
        _warn(f"{r.cells_kept:,} formula cells kept their cached values: {'; '.join(parts)}")


def cmd_verify(args: argparse.Namespace) -> int:
    from .app import verify_workbook
    r = verify_workbook(args.file, args.sheet, args.params, args.loss, values_only=args.values_only,
                        grad=args.grad, of=args.of, wrt=args.wrt)
    if args.json:
        _print_json(r.as_dict())
    else:
        _print_verify(r)
    if not r.ok:
        return EXIT_FAILED
    if r.unchecked:            # what was checked passed; a model could not be: the input is the problem
        more = f" (and {len(r.unchecked) - 1} more models not checked)" if len(r.unchecked) > 1 else ""
        print(f"xl2nn: error: model {r.unchecked[0].objective} not checked: {r.unchecked[0].skipped}{more}",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    return EXIT_OK


def _print_verify(r: VerifyReport) -> None:
    print(f"values (recomputed vs cached, fail above rel {r.value_rtol:g})")
    for s in r.values:
        status = "ok  " if s.ok else "FAIL"
        extra = f", {s.skipped} not recomputed" if s.skipped else ""
        print(f"  {status} {s.sheet:<12} {s.checked:>7,} cells  max abs {s.max_abs:.3g}  "
              f"max rel {s.max_rel:.3g}  worst {s.worst}{extra}")
        if not s.ok:
            print(f"       {s.failed:,} cell(s) differ; first {s.first_failure} {s.first_formula}: "
                  f"cached {s.first_cached!r}, recomputed {s.first_got!r}")
    if r.not_recomputed:
        print("  not recomputed (kept their cached values, not checked): " + listing(r.not_recomputed))
    if not r.values:
        print("  no formula cells with a cached number")
    for m in r.models:
        _print_model_check(m, r.grad_rtol)
    if r.no_model:
        print(r.no_model)
    for line in r.hand_lines():
        print(line)
    n = len(r.unchecked)
    print("verify: " + ("FAILED" if not r.ok else f"incomplete: {n} model{'s' if n > 1 else ''} not checked"
                        if n else "passed"))


def _print_model_check(m, rtol: float) -> None:
    """One model's gradient and trace check (m: app.verification.ModelCheck)."""
    spec, grads, trace = m.spec, m.gradients, m.trace
    source = spec.source if spec else "Solver"
    if m.skipped:
        print(f"model {m.objective} ({source}): not checked: {m.skipped}")
        return
    print(f"gradients of {m.objective} ({source}; autograd vs central differences, fail above rel {rtol:g})")
    worst = grads.worst
    status = "ok  " if grads.ok else "FAIL"
    at = f"{grads.points} weight point{'s' if grads.points != 1 else ''}" + (
        f" ({grads.skipped_points} more gave an error value)" if grads.skipped_points else "")
    print(f"  {status} {m.n_params} parameters at {at}  max rel {worst.rel if worst else 0:.3g}"
          + (f"  worst {worst.cell} ({worst.label}): autograd {worst.autograd:.10g}, "
             f"finite difference {worst.finite_difference:.10g} (float64 noise of the "
             f"difference: {worst.noise:.2g})" if worst else ""))
    for g in grads.checks:
        if not g.ok:
            print(f"       {g.cell} ({g.label}) at point {g.point}: autograd {g.autograd:.10g} vs "
                  f"{g.finite_difference:.10g}")
    if trace is None:
        return
    if trace.mode == "interpreted":
        print(f"  traced program: none, train runs the interpreter (exact, slower): {trace.reason}")
    else:
        part = "" if trace.traced else " (these cells interpreted, the rest traced: " + trace.reason + ")"
        print(f"  {'ok  ' if trace.ok else 'FAIL'} traced program vs interpreter at {trace.points} weight points  "
              f"max rel {trace.max_rel:.3g}{part}")


def cmd_train(args: argparse.Namespace) -> int:
    from .app import train_workbook
    r = train_workbook(args.file, args.sheet, args.params, args.loss, output=args.output, device=args.device,
                       steps=args.steps, epochs=args.epochs, lr=args.lr, optimizer=args.optimizer,
                       batch_size=args.batch_size, init=args.init, seed=args.seed, log_every=args.log_every,
                       dtype=args.dtype, compile=args.compile)
    for w in r.warnings:
        _warn(w)
    if args.json:
        _print_json(r.as_dict())
    else:
        _print_train(r)
    return EXIT_OK


def _print_train(r: TrainReport) -> None:
    spec, o, result = r.spec, r.options, r.result
    batch = "full batch" if result.batch_size is None else f"batches of {result.batch_size} of {r.rows} rows"
    init = "workbook weights" if o.init == "workbook" else f"random weights (seed {o.seed})"
    rate = result.steps / result.seconds if result.seconds > 0 else float("inf")
    print(f"trained   {_sense(spec.sense, spec.target)} {spec.objective_name}: {r.parameters} parameters "
          f"from {init}")
    if spec.note:
        print(f"          {spec.note}")
    epochs = "" if result.batch_size is None else f" ({result.epochs:g} epochs of {result.steps_per_epoch} steps)"
    print(f"used      {o.optimizer}, lr {o.lr:g}, {batch}, {result.steps:,} steps{epochs}, "
          f"{r.device} {o.dtype}")
    print(f"loss      {result.start_loss:.10g} → {result.final_loss:.10g}")
    print(f"time      {result.seconds:.2f} s training ({rate:,.0f} steps/s), "
          f"{r.total_seconds:.2f} s in all")
    if result.interpreted:
        how = "interpreted in part (exact; these cells slower, the rest traced)" if result.mode == "mixed" \
            else "interpreted, not traced (exact, slower)"
        print(f"          {how}: {result.interpreted}")
    if r.dropout:
        print(f"dropout   RAND in {', '.join(r.dropout)} drawn afresh each step (seed {o.seed}); the losses above "
              "are the sheet's, with its saved draws")
    every = "every step" if result.log_every == 1 else f"every {result.log_every} steps"
    print(f"wrote     {r.output}  ({r.cells_written:,} cells; trace sheet {r.trace_sheet!r}: "
          f"{r.trace_rows:,} row{'s' if r.trace_rows != 1 else ''}, {every})")


def cmd_export(args: argparse.Namespace) -> int:
    from .app import export_model
    r = export_model(args.file, args.output, args.sheet, args.params, args.loss, inputs=args.inputs,
                     outputs=args.outputs)
    if args.json:
        _print_json(r.as_dict())
        return EXIT_OK
    if r.forward:
        print(f"exported  forward({', '.join(r.inputs)}) → {r.outputs}; "
              + "; ".join(f"{n} = {a}" for n, a in r.inputs.items()))
        print("          " + ("parameters " + ", ".join(f"{n} = {a}" for n, a in r.parameters.items())
                              if r.parameters else "no parameters: every other cell folded as a constant"))
    else:
        print(f"exported  {r.objective} and its {len(r.parameters)} parameter range(s): "
              + ", ".join(f"{n} = {a}" for n, a in r.parameters.items()))
    for f in r.files:
        print(f"wrote     {f}")
    return EXIT_OK


def cmd_import_weights(args: argparse.Namespace) -> int:
    from .app import import_weights
    r = import_weights(args.file, args.weights, args.output, args.sheet, args.params, args.loss)
    for stale in r.stale:
        _warn(f"kept a stale cached value (unsupported function): {stale}")
    if args.json:
        _print_json(r.as_dict())
    else:
        _print_import(r)
    return EXIT_OK


def _print_import(r: ImportReport) -> None:
    print(f"imported  {r.weights} into {r.objective}'s parameter cells")
    print(f"objective {r.objective} = {r.objective_value!r}")
    print(f"wrote     {r.output}  ({r.cells_written:,} cells)")


def run() -> None:
    """The console script: main(), then a hard exit. Tearing down the interpreter (freeing
    torch's modules and a big workbook's arrays) costs ~0.5 s and does nothing we need: the
    output files are already closed and renamed into place. (mypy exits the same way.)"""
    code = main()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:       # the reader of a pipe left before the last buffer went out
        code = code or 141
    os._exit(code)


if __name__ == "__main__":
    run()
