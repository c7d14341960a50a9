"""The benchmark scripts measure what they say (their figures are in the README)."""
from __future__ import annotations

import importlib.util
import sys

import pytest

from .conftest import ROOT


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop(spec.name, None)
    return module


def test_train_step_times_torch_compile_only_when_asked(monkeypatch):
    """measure(compiled=False) must not compile (its flag was overwritten by the compiled
    workbook, so every call compiled, and --compile changed nothing)."""
    train_step = _script("train_step")
    calls = []
    monkeypatch.setattr(train_step.torch, "compile", lambda *a, **k: calls.append(a) or pytest.fail("compiled"))
    r = train_step.measure(str(ROOT / "sample_workbooks" / "titanic.xlsx"), steps=2, blocks=1, interpreter=False)
    assert set(r) == {"rows", "ops", "hand-written", "xl2nn program"} and not calls
    assert r["rows"]["n"] == 891


MODELS = _script("models")      # benchmarks/models.py: every sample's Solver model vs hand-written PyTorch


def test_models_covers_every_solver_model_of_the_samples():
    from xl2nn.compiler.model import solver_sheets
    from xl2nn.reader import read_workbook
    samples = {(p.name, sheet) for p in sorted((ROOT / "sample_workbooks").glob("*.xlsx"))
               if "." not in p.stem          # (not titanic.trained.xlsx, written by the README command)
               for sheet in solver_sheets(read_workbook(p))}
    assert {(book, sheet) for book, sheet, _ in MODELS.MODELS.values()} == samples


@pytest.mark.parametrize("name", list(MODELS.MODELS))
def test_hand_written_model_is_the_program(name):
    """The baseline is the same network: its objective equals the program's (rel 1e-12) at the
    workbook's weights (pair() asserts it) and after 3 SGD steps of each from there, which also
    holds their gradients equal; its parameters are its own copies."""
    import torch
    cpu = torch.device("cpu")
    model, program, hand = MODELS.pair(name, cpu)
    theirs = {w.untyped_storage().data_ptr() for w in model.weights.values()}
    assert not theirs & {p.untyped_storage().data_ptr() for p in hand.parameters()}
    with torch.no_grad():
        start = float(program())
    MODELS.step_timer(hand, hand.parameters(), cpu)(3)
    MODELS.step_timer(program, model.parameters(), cpu)(3)
    with torch.no_grad():
        want, got = float(program()), float(hand())
    assert want != start
    assert got == pytest.approx(want, rel=1e-12, abs=0)


def test_measure_all_reports_each_model():
    import torch
    r = MODELS.measure_all(["sgd", "dotprod"], steps=2, blocks=1, device=torch.device("cpu"))
    assert list(r) == ["sgd", "dotprod"]
    assert r["sgd"]["rows"] == 30 and r["dotprod"]["rows"] > 0 and r["dotprod"]["ops"] > 0
    assert all(v["ratio"] == v["program"] / v["hand"] > 0 for v in r.values())


def test_scale_measures_each_writer_and_the_error_report(tmp_path):
    """benchmarks/scale.py's per-writer run: whole processes that succeed (inspect, train with
    write-back) and one that must fail with exit 2 naming the #VALUE! (the broken workbook)."""
    scale = _script("scale")
    r = scale.measure_flavour("openpyxl-write-only", 150, tmp_path, libreoffice=False)
    assert r["inspect"] > 0 and r["train"] > 0 and r["error"] > 0 and r["train_mib"] > 0
    assert (tmp_path / "out_openpyxl-write-only_150.xlsx").exists() and not (tmp_path / "never.xlsx").exists()
