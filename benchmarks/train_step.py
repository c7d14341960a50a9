"""One SGD step of the compiled titanic `nnet` model vs a hand-written PyTorch module.

Both run the same network (two ReLU units over the same 10 inputs, summed, squared error,
mean) on the same tensors — the input block and targets are read out of the workbook — with
torch.optim.SGD, in the same process, interleaved in blocks. Prints microseconds per step (best and median
block) and the ratio compiled / hand-written (target: <= 1.1 on CPU).

    python benchmarks/train_step.py [WORKBOOK] [--sheet nnet] [--device auto|cpu|cuda]
"""
from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from xl2nn.api import compile_workbook, pick_device
from xl2nn.compiler.program import Program

DEFAULT = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "titanic.xlsx"


class HandWritten(nn.Module):
    """The fast.ai titanic 'nnet' sheet as one would write it in PyTorch."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("x", x)
        self.register_buffer("y", y)
        self.w = nn.Parameter(w.clone())

    def forward(self) -> torch.Tensor:
        pred = torch.relu(self.x @ self.w).sum(dim=1)
        return ((self.y - pred) ** 2).mean()


def step_timer(loss_fn, params, device: torch.device):
    opt = torch.optim.SGD(params, lr=0.05)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn().backward()
        opt.step()

    def timed(n: int) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(n):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - t) / n
    return timed


def time_blocks(runs: dict[str, Callable[[int], float]], steps: int, blocks: int) -> dict[str, dict[str, float]]:
    """Seconds per step of each `step_timer` in `runs`, warmed up, then timed in `blocks` blocks of
    `steps` steps, the runs interleaved block by block: best and median block of each."""
    for timed in runs.values():
        timed(max(5, steps // 10))           # warm up
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(blocks):
        for name, timed in runs.items():
            times[name].append(timed(steps))
    return {name: {"best": min(v), "median": statistics.median(v)} for name, v in times.items()}


def measure(workbook: str, sheet: str = "nnet", device: torch.device | None = None, steps: int = 300,
            blocks: int = 15, interpreter: bool = True, compiled: bool = False) -> dict[str, dict[str, float]]:
    """Seconds per SGD step (best and median block) of the hand-written module, the compiled
    program and (optionally) the interpreter, interleaved in blocks on the same tensors;
    with `compiled`, also both under torch.compile (on CUDA, mode="reduce-overhead": CUDA graphs)."""
    device = device or pick_device("auto")
    model = compile_workbook(workbook, sheet=sheet, device=device).model    # not `compiled`: the flag
    program = Program(model)
    grids = model.grids
    # The same tensors: the sheet's input block (G:P) and targets (A), rows 4 on.
    last = 4 + model.row_count
    x = torch.from_numpy(grids.num[sheet][4:last, 7:17].copy()).to(device)
    y = torch.from_numpy(grids.num[sheet][4:last, 1].copy()).to(device)
    (w,) = model.weights.values()
    # nnet holds one unit's weights per row (R4:AA5), mmult one per column (S4:T13).
    hand = HandWritten(x, y, w.detach() if w.shape[0] == x.shape[1] else w.detach().T).to(device)
    with torch.no_grad():
        assert abs(float(hand()) - float(program())) <= 1e-12 * float(program()), "not the same network"

    runs = {
        "hand-written": step_timer(hand, hand.parameters(), device),
        "xl2nn program": step_timer(program, model.parameters(), device),
    }
    if interpreter:
        runs["xl2nn interpreter"] = step_timer(model, model.parameters(), device)
    if compiled:
        mode = "reduce-overhead" if device.type == "cuda" else None
        hand_c = torch.compile(hand, mode=mode)
        runs["hand-written, torch.compile"] = step_timer(hand_c, hand.parameters(), device)
        program_c = Program(model)                 # its own trace: `program` stays eager
        assert program_c.compile() == "", "torch.compile failed"
        runs["xl2nn program, torch.compile"] = step_timer(program_c, model.parameters(), device)
    return {"rows": {"n": float(x.shape[0])}, "ops": {"n": float(program.count_ops())},
            **time_blocks(runs, steps, blocks)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workbook", nargs="?", default=str(DEFAULT))
    ap.add_argument("--sheet", default="nnet")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--steps", type=int, default=300, help="steps per timed block")
    ap.add_argument("--blocks", type=int, default=15)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--compile", action="store_true", help="also time both under torch.compile")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    r = measure(args.workbook, args.sheet, device, args.steps, args.blocks, compiled=args.compile)
    hand = r["hand-written"]
    # Best-of blocks is the figure least moved by the machine's noise; the median is shown too.
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"{args.sheet}: {int(r['rows']['n'])} rows, {int(r['ops']['n'])} tensor ops per forward")
    for name, t in r.items():
        if name in ("rows", "ops"):
            continue
        print(f"  {name:<28} best {t['best'] * 1e6:7.1f} us/step  ratio {t['best'] / hand['best']:.2f}"
              f"   median {t['median'] * 1e6:7.1f} us/step  ratio {t['median'] / hand['median']:.2f}")


if __name__ == "__main__":
    main()
