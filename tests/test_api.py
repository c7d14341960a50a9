"""The Python API takes what a Python user passes: lists of ranges, pathlib paths; a wrong type
is a TypeError naming the argument."""
from __future__ import annotations

from pathlib import Path

import pytest

from xl2nn.api import compile_workbook

from .conftest import solver_workbook


def _workbook(path: Path) -> Path:
    rows = [[float(x), 2.0 * x + 1] for x in range(1, 5)]
    rows[0] += [0.3, 0.1]
    rows[1] += [0.7]
    f = {f"E{r}": f"=(A{r}*$C$1+$C$2+$D$1-B{r})^2" for r in range(1, 5)}
    f["F1"] = "=SUM(E1:E4)"
    return solver_workbook(path, rows, f, "$C$1:$C$2", "$F$1")


def test_params_as_a_list_or_a_string_and_paths_as_path_or_str(tmp_path):
    src = _workbook(tmp_path / "m.xlsx")
    by_list = compile_workbook(src, params=["C1:C2", "D1"], loss="F1")
    by_text = compile_workbook(str(src), params="C1:C2,D1", loss="F1")
    assert list(by_list.model.weights) == list(by_text.model.weights) == ["model_C1_C2", "model_D1_D1"]
    assert float(by_list.model()) == float(by_text.model())


@pytest.mark.parametrize("kwargs, message", [
    ({"params": 5, "loss": "F1"}, "params must be a str like 'B24:C26,B5:E7' or a list of such ranges, not int"),
    ({"params": ["C1:C2", 3], "loss": "F1"}, "params must be a str"),
    ({"params": "C1:C2", "loss": 7}, "loss must be a str, not int"),
    ({"sheet": ["model"]}, "sheet must be a str, not list"),
])
def test_wrong_types_name_the_argument(tmp_path, kwargs, message):
    src = _workbook(tmp_path / "m.xlsx")
    with pytest.raises(TypeError, match=message.replace("(", r"\(").replace("[", r"\[")):
        compile_workbook(src, **kwargs)
    with pytest.raises(TypeError, match="path must be a str or a pathlib.Path, not bytes"):
        compile_workbook(bytes(src))


def test_the_command_line_imports_no_torch():
    """cli.py only parses and prints; the use cases (xl2nn.app) load torch when called."""
    import subprocess
    import sys
    code = "import sys, xl2nn.cli, xl2nn.app; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
