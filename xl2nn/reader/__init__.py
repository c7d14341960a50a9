"""Stage 1: workbook reading."""
from .workbook import DefinedName, Formula, Sheet, Table, Workbook
from .xlsx import check_file, prefetch, read_workbook

__all__ = ["DefinedName", "Formula", "Sheet", "Table", "Workbook", "check_file", "prefetch", "read_workbook"]
