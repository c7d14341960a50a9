"""Writing results back into workbooks without disturbing anything else."""
from .trace_sheet import LineChart, NewSheet
from .xlsx_patch import patch_sheet_xml, patch_workbook

__all__ = ["patch_workbook", "patch_sheet_xml", "NewSheet", "LineChart"]
