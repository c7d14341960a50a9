"""Export to PyTorch (source, state_dict, safetensors, ONNX) and import of weights back into Excel."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from xl2nn import cli
from xl2nn.api import compile_workbook
from xl2nn.export import load_python, read_weights
from .libreoffice import find_soffice, recalculate_many
from xl2nn.reader import read_workbook

from .conftest import sha256
from .test_program import _mlp_workbook

SHEETS = {"linear": "AA7", "nnet": "AH1", "mmult": "AA1"}


def xl2nn(capsys, *args: str) -> tuple[int, str, str]:
    before = sha256(Path(args[1]))
    rc = cli.main(list(args))
    out, err = capsys.readouterr()
    assert sha256(Path(args[1])) == before          # the input is never written
    return rc, out, err


def run_without_xl2nn(script: Path) -> str:
    """Run an exported module as `python model.py` in a process where `import xl2nn` fails."""
    code = ("import sys, runpy; sys.modules['xl2nn'] = None; "
            f"runpy.run_path({str(script)!r}, run_name='__main__')")
    r = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, cwd=script.parent)
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.mark.parametrize("sheet", sorted(SHEETS))
def test_exported_source_prints_the_objective_without_xl2nn(reference, tmp_path, capsys, sheet):
    out = tmp_path / f"{sheet}.py"
    rc, _, err = xl2nn(capsys, "export", str(reference), "--sheet", sheet, "-o", str(out))
    assert rc == 0, err
    text = out.read_text()
    assert "xl2nn" not in "".join(line for line in text.splitlines() if line.startswith(("import", "from")))
    assert f"# {sheet}!" in text                                   # lines name their cells
    want = float(compile_workbook(reference, sheet=sheet).model().detach())
    got = float(run_without_xl2nn(out))
    assert got == pytest.approx(want, rel=1e-12)


def test_the_same_names_in_every_format(reference, tmp_path, capsys):
    for suffix in (".py", ".pt", ".safetensors"):
        rc, _, err = xl2nn(capsys, "export", str(reference), "--sheet", "nnet", "-o", str(tmp_path / f"m{suffix}"))
        assert rc == 0, err
    module = load_python(tmp_path / "m.py")
    cells = read_workbook(reference).sheets["nnet"].values
    want = np.array([[cells[(r, c)] for c in range(18, 28)] for r in (4, 5)])     # nnet!R4:AA5
    for weights in (read_weights(tmp_path / "m.pt"), read_weights(tmp_path / "m.safetensors"),
                    {k: v.detach().numpy() for k, v in module.state_dict().items()}):
        assert list(weights) == ["nnet_R4_AA5"]
        assert np.array_equal(weights["nnet_R4_AA5"], want)


def test_round_trip_through_plain_pytorch_and_libreoffice(tmp_path, capsys):
    """export .py -> train with plain torch -> import-weights -> LibreOffice gives torch's loss."""
    src = _mlp_workbook(tmp_path / "mlp.xlsx")
    rc, _, err = xl2nn(capsys, "export", str(src), "-o", str(tmp_path / "mlp.py"))
    assert rc == 0, err
    model = load_python(tmp_path / "mlp.py")
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    start = float(model().detach())
    for _ in range(100):
        opt.zero_grad()
        model().backward()
        opt.step()
    trained = float(model().detach())
    assert trained < 0.8 * start
    for suffix, save in ((".pt", torch.save), (".safetensors", save_file)):
        save(model.state_dict(), tmp_path / f"w{suffix}")
        out = tmp_path / f"imported{suffix}.xlsx"
        rc, text, err = xl2nn(capsys, "import-weights", str(src), str(tmp_path / f"w{suffix}"), "-o", str(out),
                              "--json")
        assert rc == 0, err
        info = json.loads(text)
        assert info["objective_value"] == pytest.approx(trained, rel=1e-12)
        assert read_workbook(out).sheets["model"].values[(1, 20)] == pytest.approx(trained, rel=1e-12)  # T1
    if find_soffice() is None:
        pytest.skip("LibreOffice (soffice) is not installed")
    lo = tmp_path / "lo.xlsx"
    recalculate_many([(tmp_path / "imported.pt.xlsx", lo)])
    assert read_workbook(lo).sheets["model"].values[(1, 20)] == pytest.approx(trained, rel=1e-9)


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="onnxruntime is not installed")
def test_onnx_runs_under_onnxruntime(tmp_path, capsys):
    import onnxruntime
    src = _mlp_workbook(tmp_path / "mlp.xlsx")
    rc, _, err = xl2nn(capsys, "export", str(src), "-o", str(tmp_path / "mlp.onnx"))
    assert rc == 0, err
    c = compile_workbook(src)
    session = onnxruntime.InferenceSession(str(tmp_path / "mlp.onnx"))
    assert [i.name for i in session.get_inputs()] == list(c.model.weights)
    for scale in (1.0, -0.7):                     # the objective as a function of the weights
        feeds = {k: (v.detach() * scale).numpy() for k, v in c.model.weights.items()}
        with torch.no_grad():
            for k, v in c.model.weights.items():
                v.mul_(scale)
            want = float(c.model())
            for k, v in c.model.weights.items():
                v.div_(scale)
        (got,) = session.run(None, feeds)
        assert float(got) == pytest.approx(want, rel=1e-12)


def test_bad_weights_and_formats(tmp_path, capsys):
    src = _mlp_workbook(tmp_path / "mlp.xlsx")
    good = {"model_H2_I4": torch.zeros(3, 2, dtype=torch.float64), "model_K2_K4": torch.zeros(3, 1, dtype=torch.float64)}
    cases = {
        "names": ({"model_H2_I4": good["model_H2_I4"], "other": torch.zeros(2)}, "missing model_K2_K4; unknown other"),
        "shape": ({**good, "model_H2_I4": torch.zeros(2, 3)}, "model_H2_I4 has shape 2×3, but model!H2:I4 is 3×2"),
        "nan": ({**good, "model_K2_K4": torch.full((3, 1), float("nan"))}, "model_K2_K4 holds NaN"),
    }
    for name, (sd, message) in cases.items():
        torch.save(sd, tmp_path / f"{name}.pt")
        out = tmp_path / f"{name}.xlsx"
        rc, _, err = xl2nn(capsys, "import-weights", str(src), str(tmp_path / f"{name}.pt"), "-o", str(out))
        assert rc == 2 and len(err.strip().splitlines()) == 1, err
        assert message in err, err
        assert not out.exists()
    (tmp_path / "junk.pt").write_bytes(b"not a pickle")
    rc, _, err = xl2nn(capsys, "import-weights", str(src), str(tmp_path / "junk.pt"), "-o", str(tmp_path / "j.xlsx"))
    assert rc == 2 and "junk.pt: cannot read weights" in err and len(err.strip().splitlines()) == 1
    rc, _, err = xl2nn(capsys, "export", str(src), "-o", str(tmp_path / "model.txt"))
    assert rc == 2 and "export writes .py, .pt, .safetensors, .onnx" in err
    assert not (tmp_path / "model.txt").exists()
