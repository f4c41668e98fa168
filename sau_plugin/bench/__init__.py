"""Benchmark tables as data (``tables/*.yaml``) and the planner that turns one into runs."""

from .plan import Run, Selection, plan, report_argv
from .table import Defense, Table, load_table, shipped_tables, table_from_dict

__all__ = ["Defense", "Run", "Selection", "Table", "load_table", "plan", "report_argv", "shipped_tables",
           "table_from_dict"]
