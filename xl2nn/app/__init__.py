"""The application layer: one function per use case, each returning a report dataclass
holding everything the command line prints (the CLI only parses arguments and formats).

The use cases import torch; they load on first use (PEP 562), so that `import xl2nn.app`
stays cheap and the CLI can start reading a workbook before torch is imported.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .common import default_output, listing, workbook_output

if TYPE_CHECKING:
    from .evaluation import EvalReport, eval_workbook
    from .inspection import InspectReport, ParamInfo, inspect_workbook
    from .training import TrainReport, train_workbook
    from .verification import VerifyReport, verify_workbook
    from .weights import ExportReport, ImportReport, export_model, import_weights

_LAZY = {
    "inspect_workbook": "inspection", "InspectReport": "inspection", "ParamInfo": "inspection",
    "eval_workbook": "evaluation", "EvalReport": "evaluation",
    "verify_workbook": "verification", "VerifyReport": "verification",
    "train_workbook": "training", "TrainReport": "training",
    "export_model": "weights", "ExportReport": "weights",
    "import_weights": "weights", "ImportReport": "weights",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["default_output", "listing", "workbook_output",
           "inspect_workbook", "InspectReport", "ParamInfo", "eval_workbook", "EvalReport",
           "verify_workbook", "VerifyReport", "train_workbook", "TrainReport",
           "export_model", "ExportReport", "import_weights", "ImportReport"]
