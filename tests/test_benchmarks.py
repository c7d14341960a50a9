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
