"""Benchmark tables as data (``tables/*.yaml``), the planner that turns one into runs, and the executors
that run them (``local.py``: N at once on this machine; ``ray_exec.py``: Ray tasks on a cluster)."""

from .plan import Run, Selection, plan, report_argv
from .table import Defense, Table, load_table, shipped_tables, table_from_dict

__all__ = ["Defense", "Run", "Selection", "Table", "load_table", "plan", "report_argv", "shipped_tables",
           "table_from_dict"]
