"""Writing results back into workbooks without disturbing anything else."""
from .trace_sheet import LineChart, NewSheet
from .columns import CellColumns
from .sheet_patch import patch_sheet_xml
from .xlsx_patch import patch_workbook

__all__ = ["patch_workbook", "CellColumns", "patch_sheet_xml", "NewSheet", "LineChart"]
