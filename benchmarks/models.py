"""One SGD step of every bundled sample's Solver model, compiled program vs hand-written PyTorch.

benchmarks/train_step.py does this for titanic `nnet`; this script does it for each Solver model
of sample_workbooks/ in one run. For each model, a hand-written nn.Module computes the same
objective the way a PyTorch engineer would write it, on the same tensors (inputs, targets and
masks read out of the compiled workbook's grid) and starting from the same parameter values
(split where PyTorch would keep them apart, e.g. a weight and a bias); before timing, its
objective must equal the compiled program's to rel 1e-12. Both then take torch.optim.SGD steps,
interleaved in blocks (train_step.py's timers). Prints one line per model: rows (terms of the
loss), tensor ops per forward of the program, median microseconds per step of each, and the
ratio program / hand-written.

    python benchmarks/models.py [--device auto|cpu|cuda] [--steps N] [--blocks N] [--only NAME ...]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from train_step import HandWritten, step_timer, time_blocks  # noqa: E402

from xl2nn.api import compile_workbook, pick_device  # noqa: E402
from xl2nn.cells import parse_a1  # noqa: E402
from xl2nn.compiler.lower import CompiledModel  # noqa: E402
from xl2nn.compiler.program import Program  # noqa: E402

SAMPLES = HERE.parent / "sample_workbooks"


def cells(model: CompiledModel, sheet: str, ref: str) -> torch.Tensor:
    """The values of the range `ref` ("H2:V16") of `sheet`, rows × columns, as the model read them."""
    first, _, last = ref.partition(":")
    (r1, c1), (r2, c2) = parse_a1(first), parse_a1(last or first)
    num = model.grids.num[sheet]                     # indexed by Excel's 1-based row and column
    return torch.from_numpy(num[r1:r2 + 1, c1:c2 + 1].copy())


def param(t: torch.Tensor) -> nn.Parameter:
    """A parameter of the hand-written module: a copy of (part of) a compiled model's weight."""
    return nn.Parameter(t.detach().clone())


class Module(nn.Module):
    """A hand-written model: its data are buffers; `rows`, the number of terms its loss averages."""

    def data(self, rows: int, **tensors: torch.Tensor) -> None:
        self.rows = rows
        for name, t in tensors.items():
            self.register_buffer(name, t)


class Linear(Module):
    """titanic `linear`: a linear model (the Ones column is the bias), mean squared error."""

    def __init__(self, x, y, w):
        super().__init__()
        self.data(len(y), x=x, y=y)
        self.w = param(w)                            # 1 × 10, as nn.Linear(10, 1, bias=False) holds it

    def forward(self):
        return F.mse_loss(F.linear(self.x, self.w).squeeze(1), self.y)


class Regression(Module):
    """linear_regression: nn.Linear(2, 1), mean squared error."""

    def __init__(self, x, y, w, b):
        super().__init__()
        self.data(len(y), x=x, y=y)
        self.w, self.b = param(w), param(b)

    def forward(self):
        return F.mse_loss(F.linear(self.x, self.w, self.b).squeeze(1), self.y)


class Softmax(Module):
    """softmax_regression: three logits per row (the Ones column is the bias), cross-entropy."""

    def __init__(self, x, target, w):
        super().__init__()
        self.data(len(target), x=x, target=target)
        self.w = param(w)                            # one row per class

    def forward(self):
        return F.cross_entropy(F.linear(self.x, self.w), self.target)


class Line(Module):
    """sgd_by_hand: y = a·x + b fitted to all rows at once, mean squared error."""

    def __init__(self, x, y, a, b):
        super().__init__()
        self.data(len(y), x=x, y=y)
        self.a, self.b = param(a), param(b)

    def forward(self):
        return F.mse_loss(self.a * self.x + self.b, self.y)


class Conv(Module):
    """convolution: a 3×3 convolution (no padding) with a ReLU, mean squared error to the target."""

    def __init__(self, image, target, kernel):
        super().__init__()
        self.data(target.numel(), image=image[None, None], target=target[None, None])
        self.kernel = param(kernel[None, None])      # 1 × 1 × 3 × 3, as nn.Conv2d(1, 1, 3) holds it

    def forward(self):
        return F.mse_loss(F.relu(F.conv2d(self.image, self.kernel)), self.target)


class Collab(Module):
    """collab_filter: a rating is a user embedding · a movie embedding (plus a user and a movie
    bias), 0 where there is no rating; the loss is the RMSE over the ratings given."""

    def __init__(self, ratings, users, movies, user_bias=None, movie_bias=None):
        super().__init__()
        mask = ratings != 0                          # ratings run from 0.5; a blank reads as 0
        self.count = int(mask.sum())
        self.data(self.count, ratings=ratings, mask=mask)
        self.users, self.movies = param(users), param(movies)
        self.biased = user_bias is not None
        if self.biased:
            self.user_bias, self.movie_bias = param(user_bias), param(movie_bias)

    def forward(self):
        dot = self.users @ self.movies
        if self.biased:
            dot = dot + self.movie_bias + self.user_bias
        pred = torch.where(self.mask, dot, 0)
        return torch.sqrt(((self.ratings - pred) ** 2).sum() / self.count)


def _titanic_net(m: CompiledModel, sheet: str) -> nn.Module:
    """nnet and mmult: train_step.py's module (relu(x @ w).sum(1), squared error, mean)."""
    x, y = cells(m, sheet, "G4:P894"), cells(m, sheet, "A4:A894")[:, 0]
    (w,) = m.weights.values()                        # nnet: a row per unit (R4:AA5); mmult: a column (S4:T13)
    net = HandWritten(x, y, w.detach().T if sheet == "nnet" else w.detach())
    net.rows = len(y)
    return net


def _titanic_linear(m: CompiledModel) -> nn.Module:
    (w,) = m.weights.values()                        # R4:AA4
    return Linear(cells(m, "linear", "G4:P894"), cells(m, "linear", "A4:A894")[:, 0], w)


def _regression(m: CompiledModel) -> nn.Module:
    (w,) = m.weights.values()                        # H4:J4: w1, w2, b
    x, y = cells(m, "regression", "A4:B1003"), cells(m, "regression", "C4:C1003")[:, 0]
    return Regression(x, y, w[:, :2], w[:, 2])


def _softmax(m: CompiledModel) -> nn.Module:
    (w,) = m.weights.values()                        # W4:Y6
    x, cls = cells(m, "softmax", "A4:C303"), cells(m, "softmax", "D4:D303")[:, 0]
    return Softmax(x, cls.long() - 1, w)             # classes 1-3 -> 0-2


def _sgd(m: CompiledModel) -> nn.Module:
    (w,) = m.weights.values()                        # S4:T4: a, b
    return Line(cells(m, "sgd", "A4:A33")[:, 0], cells(m, "sgd", "B4:B33")[:, 0], w[0, :1], w[0, 1:])


def _conv(m: CompiledModel) -> nn.Module:
    (kernel,) = m.weights.values()                   # P4:R6
    return Conv(cells(m, "conv", "B4:M15"), cells(m, "conv", "N19:W28"), kernel)


def _dotprod(m: CompiledModel) -> nn.Module:
    users, movies = m.weights.values()               # B25:F39, H19:V23
    return Collab(cells(m, "dotprod", "H2:V16"), users, movies)


def _bias(m: CompiledModel) -> nn.Module:
    users, movies = m.weights.values()               # A26:F40 (bias, factors), H19:V24 (bias row, factors)
    return Collab(cells(m, "bias", "H2:V16"), users[:, 1:], movies[1:], users[:, :1], movies[:1])


# name: (workbook, sheet, hand-written module from the compiled model)
MODELS = {
    "nnet": ("titanic.xlsx", "nnet", lambda m: _titanic_net(m, "nnet")),
    "linear": ("titanic.xlsx", "linear", _titanic_linear),
    "mmult": ("titanic.xlsx", "mmult", lambda m: _titanic_net(m, "mmult")),
    "regression": ("linear_regression.xlsx", "regression", _regression),
    "softmax": ("softmax_regression.xlsx", "softmax", _softmax),
    "sgd": ("sgd_by_hand.xlsx", "sgd", _sgd),
    "conv": ("convolution.xlsx", "conv", _conv),
    "dotprod": ("collab_filter.xlsx", "dotprod", _dotprod),
    "bias": ("collab_filter.xlsx", "bias", _bias),
}


def pair(name: str, device: torch.device) -> tuple[CompiledModel, Program, nn.Module]:
    """The compiled model, its Program and the hand-written module, checked to be the same network."""
    workbook, sheet, hand_written = MODELS[name]
    model = compile_workbook(SAMPLES / workbook, sheet=sheet, device=device).model
    program = Program(model)
    hand = hand_written(model).to(device)
    with torch.no_grad():
        want, got = float(program()), float(hand())
    assert abs(got - want) <= 1e-12 * abs(want), f"{name}: hand-written {got!r} != program {want!r}"
    return model, program, hand


def measure_all(names: list[str] | None = None, steps: int = 300, blocks: int = 15,
                device: torch.device | None = None) -> dict[str, dict[str, float]]:
    """Per model: rows, ops, and seconds per SGD step (median and best block) of the
    hand-written module and the program, and `ratio`, program / hand-written (medians)."""
    device = device or pick_device("auto")
    out = {}
    for name in names or MODELS:
        model, program, hand = pair(name, device)
        t = time_blocks({"hand": step_timer(hand, hand.parameters(), device),
                         "program": step_timer(program, model.parameters(), device)}, steps, blocks)
        out[name] = {"rows": hand.rows, "ops": program.count_ops(),
                     "hand": t["hand"]["median"], "program": t["program"]["median"],
                     "hand_best": t["hand"]["best"], "program_best": t["program"]["best"],
                     "ratio": t["program"]["median"] / t["hand"]["median"]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--steps", type=int, default=300, help="steps per timed block")
    ap.add_argument("--blocks", type=int, default=15)
    ap.add_argument("--only", nargs="+", choices=list(MODELS), metavar="NAME",
                    help=f"only these models ({', '.join(MODELS)})")
    args = ap.parse_args()
    device = pick_device(args.device)
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"{args.blocks} blocks of {args.steps} SGD steps, medians")
    for name in args.only or MODELS:          # one line as each model finishes
        r = measure_all([name], args.steps, args.blocks, device)[name]
        print(f"  {name:<10} {r['rows']:>5} rows {r['ops']:>4} ops   hand-written {r['hand'] * 1e6:7.1f} us/step"
              f"   program {r['program'] * 1e6:7.1f} us/step   ratio {r['ratio']:.2f}", flush=True)


if __name__ == "__main__":
    main()
