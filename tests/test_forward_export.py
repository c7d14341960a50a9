"""Forward-only export (no Solver model): `xl2nn export FILE --inputs RANGE[,RANGE] --outputs RANGE`.

Three forward passes built with openpyxl (a 2-layer MLP, a softmax, attention), exported as
forward(*inputs) -> outputs and judged by LibreOffice: the module called with new inputs equals
LibreOffice's recalculation of the workbook with those inputs written into the input cells, and
the workbook's own inputs give its cached outputs. Bad input is one line naming the cell.
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from openpyxl import Workbook, load_workbook
from openpyxl.worksheet.formula import ArrayFormula
from openpyxl.worksheet.worksheet import Worksheet

from xl2nn.api import compile_workbook
from xl2nn.app import export_model
from xl2nn.cells import parse_a1
from xl2nn.compiler.program import Program
from xl2nn.export import load_python, read_weights

from .conftest import run_cli
from .libreoffice import find_soffice, recalculate_many

Inputs = dict[str, np.ndarray]      # input range (A1, on the sheet) -> values, rows × columns


# --------------------------------------------------------------------------- workbooks

def _put(ws: Worksheet, rng: str, values: np.ndarray | list[list[object]]) -> None:
    """Write a block of values (numbers or formula texts) from the range's top-left cell."""
    r0, c0 = parse_a1(rng.split(":")[0])
    for i, row in enumerate(values):
        for j, v in enumerate(row):
            ws.cell(r0 + i, c0 + j, float(v) if isinstance(v, (float, np.floating, int)) else v)


ROWS = 90      # 270 inputs: more than codegen writes inline, so the example goes to the data file


def _mlp(ws: Worksheet, x: np.ndarray, w1: np.ndarray | None = None) -> None:
    """ROWS rows × 3 features -> 4 hidden units (SUMPRODUCT per unit, IF-ReLU and MAX-ReLU) ->
    2 outputs (one CSE MMULT over the hidden block, plus a bias). Also cells for the bad-input
    cases: a header, a sum of weights only, an error."""
    rng = np.random.default_rng(1)
    last = ROWS + 1
    ws["A1"] = "x1"
    _put(ws, f"A2:C{last}", x)
    drawn = rng.normal(size=(4, 3))                       # drawn always: the rest stays the same
    _put(ws, "F2:H5", drawn if w1 is None else w1)       # W1, one row per hidden unit
    _put(ws, "I2:I5", rng.normal(size=(4, 1)) * 0.1)     # b1
    _put(ws, "F8:G11", rng.normal(size=(4, 2)))          # W2
    _put(ws, "F12:G12", rng.normal(size=(1, 2)) * 0.1)   # b2
    for r in range(2, last + 1):
        for j, col in enumerate("KLMN"):                 # z = x · W1[j] + b1[j]
            ws[f"{col}{r}"] = f"=SUMPRODUCT($A{r}:$C{r},$F${2 + j}:$H${2 + j})+$I${2 + j}"
        for j, col in enumerate("PQRS"):                 # two spellings of ReLU
            z = "KLMN"[j]
            ws[f"{col}{r}"] = f"=IF({z}{r}<0,0,{z}{r})" if j % 2 == 0 else f"=MAX(0,{z}{r})"
        ws[f"X{r}"] = f"=U{r}+$F$12"
        ws[f"Y{r}"] = f"=V{r}+$G$12"
    ws["U2"] = ArrayFormula(f"U2:V{last}", f"=MMULT(P2:S{last},F8:G11)")
    ws["F14"] = "=SUM(F2:H5)"                             # reads weights only: no input reaches it
    ws["Z2"] = "=1/(A2*0)"                                # #DIV/0! at any input


def _softmax(ws: Worksheet, x: np.ndarray, formulas: bool = True) -> None:
    """5 logits -> EXP(x)/SUMPRODUCT(EXP(row)). The logits are formulas (=A7*2, of numbers
    below), cut loose as inputs, or with formulas=False the numbers themselves."""
    _put(ws, "A7:E7", x / 2)
    _put(ws, "A1:E1", [[f"={c}7*2" for c in "ABCDE"]] if formulas else x)
    _put(ws, "A2:E2", [[f"=EXP({c}1)/SUMPRODUCT(EXP($A$1:$E$1))" for c in "ABCDE"]])


def _attention(ws: Worksheet, q: np.ndarray, k: np.ndarray, v: np.ndarray) -> None:
    """Q, K (3×2), V (3×2): scores = MMULT(Q,TRANSPOSE(K))/SQRT(2), softmax rows, MMULT(weights, V)."""
    _put(ws, "A2:B4", q)
    _put(ws, "D2:E4", k)
    _put(ws, "G2:H4", v)
    ws["J2"] = ArrayFormula("J2:L4", "=MMULT(A2:B4,TRANSPOSE(D2:E4))/SQRT(2)")
    for r in range(2, 5):
        for c, s in zip("NOP", "JKL"):
            ws[f"{c}{r}"] = f"=EXP({s}{r}-MAX($J{r}:$L{r}))"
        ws[f"Q{r}"] = f"=SUM(N{r}:P{r})"
        for c, e in zip("STU", "NOP"):
            ws[f"{c}{r}"] = f"={e}{r}/$Q{r}"
    ws["W2"] = ArrayFormula("W2:X4", "=MMULT(S2:U4,G2:H4)")


@dataclass
class Case:
    name: str
    build: Callable[..., None]      # (ws, *input arrays)
    inputs: list[str]               # ranges, in forward()'s order
    outputs: str


def _rand(shape: tuple[int, int], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape)


CASES = {
    "mlp": Case("mlp", _mlp, [f"A2:C{ROWS + 1}"], f"X2:Y{ROWS + 1}"),
    "softmax": Case("softmax", _softmax, ["A1:E1"], "A2:E2"),
    "attention": Case("attention", _attention, ["A2:B4", "D2:E4", "G2:H4"], "W2:X4"),
}


def _shape(rng: str) -> tuple[int, int]:
    a, b = (rng.split(":") + [rng])[:2]
    (r1, c1), (r2, c2) = parse_a1(a), parse_a1(b)
    return r2 - r1 + 1, c2 - c1 + 1


def _start(case: Case) -> list[np.ndarray]:
    return [_rand(_shape(r), 100 + k) for k, r in enumerate(case.inputs)]


def _new(case: Case) -> list[np.ndarray]:
    return [_rand(_shape(r), 200 + k) * 1.5 for k, r in enumerate(case.inputs)]


def _write(case: Case, path: Path, values: list[np.ndarray], **kw: object) -> Path:
    wb = Workbook()
    ws = wb.active
    ws.title = case.name
    case.build(ws, *values, **kw)
    wb.save(path)
    return path


def _written_with_numbers(case: Case, path: Path, values: list[np.ndarray]) -> Path:
    """The workbook with `values` as numbers in the input cells (a formula input replaced)."""
    kw = {"formulas": False} if case.name == "softmax" else {}
    return _write(case, path, values, **kw)


def _read(path: Path, sheet: str, rng: str) -> np.ndarray:
    ws = load_workbook(path, data_only=True)[sheet]
    return np.array([[c.value for c in row] for row in ws[rng]], dtype=float)


def _args(case: Case, *extra: str) -> list[str]:
    return ["--inputs", ",".join(case.inputs), "--outputs", case.outputs, *extra]


def _export(src: Path, out: Path, *args: str) -> tuple[int, str, str]:
    return run_cli("export", str(src), *args, "-o", str(out))


def _close(got: np.ndarray, want: np.ndarray, rel: float = 1e-9) -> None:
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=rel, atol=1e-12)


def _tensors(values: list[np.ndarray]) -> list[torch.Tensor]:
    return [torch.tensor(v, dtype=torch.float64) for v in values]


NEW_W1 = np.random.default_rng(9).normal(size=(4, 3))


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each case's workbook as openpyxl wrote it (no cached values), at its starting inputs."""
    tmp = tmp_path_factory.mktemp("forward")
    return {name: _write(case, tmp / f"{name}.xlsx", _start(case)) for name, case in CASES.items()}


@pytest.fixture(scope="module")
def judged(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """LibreOffice's recalculations, in one soffice run: each case at its starting inputs (the
    workbook to export, with cached values as a saved workbook has), at new inputs (numbers
    written into the input cells), and the MLP at new inputs and new first-layer weights."""
    if find_soffice() is None:
        pytest.skip("LibreOffice (soffice) is not installed: it is the judge of these tests")
    tmp = tmp_path_factory.mktemp("judged")
    pairs = []
    for name, case in CASES.items():
        pairs.append((_write(case, tmp / f"{name}.xlsx", _start(case)), tmp / f"{name}.lo.xlsx"))
        pairs.append((_written_with_numbers(case, tmp / f"{name}.new.xlsx", _new(case)), tmp / f"{name}.new.lo.xlsx"))
    mlp = CASES["mlp"]
    wb = Workbook()
    wb.active.title = "mlp"
    _mlp(wb.active, _new(mlp)[0], NEW_W1)
    wb.save(tmp / "mlp.w1.xlsx")
    pairs.append((tmp / "mlp.w1.xlsx", tmp / "mlp.w1.lo.xlsx"))
    recalculate_many(pairs)
    return {dst.name.removesuffix(".lo.xlsx"): dst for _, dst in pairs}


# --------------------------------------------------------------------------- against LibreOffice

@pytest.mark.parametrize("name", sorted(CASES))
def test_forward_equals_libreoffice_at_new_inputs(judged, tmp_path, name):
    """Exported from the recalculated workbook: forward(new inputs) is LibreOffice's recalculation
    with those inputs in the cells, and forward(the workbook's inputs) its cached outputs."""
    case = CASES[name]
    rc, out, err = _export(judged[name], tmp_path / f"{name}.py", *_args(case))
    assert rc == 0, err
    module = load_python(tmp_path / f"{name}.py")
    with torch.no_grad():
        got = module(*_tensors(_new(case))).numpy()
        own = module(*module.example_inputs()).numpy()
    _close(got, _read(judged[f"{name}.new"], name, case.outputs))
    for example, rng in zip(module.example_inputs(), case.inputs):
        _close(example.numpy(), _read(judged[name], name, rng), rel=1e-15)    # the cached inputs ...
    _close(own, _read(judged[name], name, case.outputs))                     # ... give the cached outputs


def test_params_are_parameters_with_the_workbook_values(judged, tmp_path):
    """--params: the first-layer weights become nn.Parameters named by range; loading other
    weights into them gives LibreOffice's values for the sheet holding those weights."""
    case = CASES["mlp"]
    rc, _, err = _export(judged["mlp"], tmp_path / "mlp.py", *_args(case, "--params", "F2:H5"))
    assert rc == 0, err
    module = load_python(tmp_path / "mlp.py")
    assert [n for n, _ in module.named_parameters()] == ["mlp_F2_H5"]
    assert list(module.state_dict()) == ["mlp_F2_H5"]                  # the example inputs are not state
    _close(module.mlp_F2_H5.detach().numpy(), _read(judged["mlp"], "mlp", "F2:H5"), rel=0)
    x = _tensors(_new(case))
    module(*x).sum().backward()
    assert module.mlp_F2_H5.grad is not None and module.mlp_F2_H5.grad.abs().sum() > 0
    module.load_state_dict({"mlp_F2_H5": torch.tensor(NEW_W1)})
    with torch.no_grad():
        _close(module(*x).numpy(), _read(judged["mlp.w1"], "mlp", case.outputs))


# --------------------------------------------------------------------------- without LibreOffice

@pytest.mark.parametrize("name", sorted(CASES))
def test_traced_program_is_the_sheets_function(sources, name):
    """The program export writes equals xl2nn's interpreter at the workbook's inputs and at five
    random input points (the trace froze nothing that depends on the inputs)."""
    case = CASES[name]
    c = compile_workbook(sources[name], inputs=case.inputs, outputs=case.outputs)
    assert c.model.input_names == [f"{name}_{r.replace(':', '_')}" for r in case.inputs]
    program = Program(c.model)
    assert program.mode == "traced", program.fallback
    assert program.check(points=6) <= 1e-12
    assert tuple(program().shape) == _shape(case.outputs)


def test_onnx_takes_the_input_ranges(sources, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    case = CASES["attention"]
    for suffix in (".py", ".onnx"):
        rc, _, err = _export(sources["attention"], tmp_path / f"att{suffix}", *_args(case))
        assert rc == 0, err
    session = ort.InferenceSession(str(tmp_path / "att.onnx"), providers=["CPUExecutionProvider"])
    names = ["attention_A2_B4", "attention_D2_E4", "attention_G2_H4"]
    assert [i.name for i in session.get_inputs()] == names
    assert [o.name for o in session.get_outputs()] == ["outputs"]
    new = _new(case)
    got, = session.run(None, dict(zip(names, new)))
    with torch.no_grad():
        want = load_python(tmp_path / "att.py")(*_tensors(new)).numpy()
    _close(got, want, rel=1e-12)


def test_standalone_source_and_json(sources, tmp_path):
    """`python mlp.py` (its example inputs in the data file) prints the outputs at the
    workbook's inputs; --json lists the ranges and argument names; .pt holds the --params."""
    import subprocess
    import sys
    case = CASES["mlp"]
    rc, out, err = _export(sources["mlp"], tmp_path / "mlp.py", *_args(case, "--params", "F2:H5,F8:G11", "--json"))
    assert rc == 0, err
    report = json.loads(out)
    assert report["inputs"] == {f"mlp_A2_C{ROWS + 1}": f"mlp!A2:C{ROWS + 1}"}
    assert report["arguments"] == [f"mlp_A2_C{ROWS + 1}"] and report["outputs"] == f"mlp!X2:Y{ROWS + 1}"
    assert report["parameters"] == {"mlp_F2_H5": "mlp!F2:H5", "mlp_F8_G11": "mlp!F8:G11"}
    assert (tmp_path / "mlp.data.safetensors").is_file()
    printed = subprocess.run([sys.executable, "-I", str(tmp_path / "mlp.py")], capture_output=True, text=True,
                             cwd=tmp_path, check=True).stdout
    want = compile_workbook(sources["mlp"], inputs=case.inputs, outputs=case.outputs).model().detach().numpy()
    _close(np.array(json.loads(printed)), want, rel=1e-12)
    rc, out, err = _export(sources["mlp"], tmp_path / "w.pt", *_args(case, "--params", "F2:H5"))
    assert rc == 0, err
    assert "forward(mlp_A2_C91) → mlp!X2:Y91" in out and "mlp_F2_H5 = mlp!F2:H5" in out
    assert list(read_weights(tmp_path / "w.pt")) == ["mlp_F2_H5"]


def test_api_export_model(sources, tmp_path):
    case = CASES["softmax"]
    r = export_model(sources["softmax"], tmp_path / "s.py", inputs=case.inputs, outputs=case.outputs)
    assert r.files == [tmp_path / "s.py"] and r.objective is None and r.parameters == {}
    assert r.as_dict()["arguments"] == ["softmax_A1_E1"] and r.outputs == "softmax!A2:E2"
    probs = load_python(tmp_path / "s.py")(torch.arange(5.0, dtype=torch.float64).reshape(1, 5))
    want = torch.softmax(torch.arange(5.0, dtype=torch.float64), 0)
    assert math.isclose(float(probs.sum()), 1.0, rel_tol=1e-12)
    torch.testing.assert_close(probs[0], want, rtol=1e-12, atol=0)


def test_inputs_on_another_sheet(tmp_path):
    """Unqualified ranges are on --sheet; the inputs may be elsewhere, and formulas (cut loose)."""
    wb = Workbook()
    data = wb.active
    data.title = "data"
    data["A1"], data["A2"], data["A3"], data["C1"] = 1.0, 2.0, "=C1*4", 0.5
    model = wb.create_sheet("model")
    model["B1"] = "=AVERAGE(data!A1:A3)"
    model["B2"] = "=COUNT(data!A1:A3)*data!A1"
    wb.save(tmp_path / "two.xlsx")
    rc, out, err = _export(tmp_path / "two.xlsx", tmp_path / "two.py", "--sheet", "model",
                           "--inputs", "data!A1:A3", "--outputs", "B1:B2")
    assert rc == 0, err
    module = load_python(tmp_path / "two.py")
    torch.testing.assert_close(module.example_inputs()[0], torch.tensor([[1.0], [2.0], [2.0]], dtype=torch.float64))
    got = module(torch.tensor([[1.0], [2.0], [6.0]], dtype=torch.float64))
    torch.testing.assert_close(got, torch.tensor([[3.0], [3.0]], dtype=torch.float64), rtol=1e-15, atol=0)


# --------------------------------------------------------------------------- bad input

M = f"{ROWS + 1}"
BAD = {
    "overlapping inputs": (["--inputs", f"A2:C{M},B3:B4", "--outputs", f"X2:Y{M}"], "overlap at mlp!B3"),
    "input is an output": (["--inputs", f"A2:C{M}", "--outputs", "A2:B2"], "overlap at mlp!A2"),
    "input is a parameter": (["--inputs", f"A2:C{M}", "--outputs", f"X2:Y{M}", "--params", "C5:D5"],
                             "overlap at mlp!C5"),
    "output reached by no input": (["--inputs", f"A2:C{M}", "--outputs", "F14"],
                                   "the output mlp!F14 (=SUM(F2:H5)) does not depend on any --inputs cell"),
    "output not a formula": (["--inputs", f"A2:C{M}", "--outputs", "F2:G2"], "the output mlp!F2 is not a formula"),
    "output an error": (["--inputs", f"A2:C{M}", "--outputs", "Z2"], "the output mlp!Z2 is #DIV/0!"),
    "input in an array formula": (["--inputs", "U2:U3", "--outputs", f"X2:Y{M}"],
                                  f"--inputs mlp!U2:U3 reaches into the array formula mlp!U2:V{M}"),
    "input holds text": (["--inputs", f"A1:C{M}", "--outputs", f"X2:Y{M}"], "--inputs cell mlp!A1 holds 'x1'"),
    "input blank": (["--inputs", f"A2:D{M}", "--outputs", f"X2:Y{M}"], "--inputs cell mlp!D2 is blank"),
    "inputs without outputs": (["--inputs", f"A2:C{M}"], "--inputs needs --outputs"),
    "outputs without inputs": (["--outputs", f"X2:Y{M}"], "--outputs needs --inputs"),
    "loss with inputs": (["--inputs", f"A2:C{M}", "--outputs", f"X2:Y{M}", "--loss", "X2"], "--loss"),
    "outputs not one range": (["--inputs", f"A2:C{M}", "--outputs", "X2:X3,Y2:Y3"], "must be one range"),
    "no such sheet": (["--sheet", "nope", "--inputs", f"A2:C{M}", "--outputs", f"X2:Y{M}"], "no sheet named 'nope'"),
    "pt without params": (["--inputs", f"A2:C{M}", "--outputs", f"X2:Y{M}", "-o", "OUT.pt"], "no --params"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_line_naming_the_cell(sources, tmp_path, case):
    args, expected = BAD[case]
    out = tmp_path / "m.py"
    if "-o" in args:
        i = args.index("-o")
        out = tmp_path / args[i + 1].replace("OUT", "m")
        args = args[:i] + args[i + 2:]
    rc, stdout, err = _export(sources["mlp"], out, *args)
    assert rc == 2, (stdout, err)
    assert err.startswith("xl2nn: error: ") and err.count("\n") == 1 and expected in err, err
    assert not out.exists()


def test_untraceable_outputs_are_refused_naming_the_cells(tmp_path):
    """TEXT of an input-dependent number has no torch form here: the traced program would hold
    the number it saw, so export refuses, naming the cells."""
    wb = Workbook()
    ws = wb.active
    ws.title = "text"
    ws["A1"], ws["A2"] = 1.25, 2.5
    ws["B1"] = '=VALUE(LEFT(TEXT(A1*2,"0.000"),3))+A2'
    ws["C1"] = "=B1*A2"
    wb.save(tmp_path / "text.xlsx")
    rc, _, err = _export(tmp_path / "text.xlsx", tmp_path / "t.py", "--inputs", "A1:A2", "--outputs", "C1")
    assert rc == 2 and err.count("\n") == 1, err
    assert "cannot be exported as a traced function of the inputs: text!B1" in err and "TEXT" in err
    assert not (tmp_path / "t.py").exists()
