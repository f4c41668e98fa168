"""Paper tables and leaderboard rows from BackdoorBench record folders (issue 7).

* :mod:`.collect` - where each defense leaves its final figures, and reading them;
* :mod:`.evaluate` - ``--reevaluate``: every saved model measured by the plugin's evaluator;
* :mod:`.table` - the table (DER, Average row, best / second marks) and its renderings, pure;
* :mod:`.leaderboard` - rows in BackdoorBench's leaderboard schema, and the plugin's extras;
* :mod:`.cli` - ``sau-plugin report``.
"""

from .collect import NO_DEFENSE, AttackResults, Figures, Run, collect, read_defense, read_no_defense
from .leaderboard import leaderboard_rows, render_backdoorbench, render_extras
from .table import Cell, Table, build_table, render_csv, render_latex, render_markdown

__all__ = ["NO_DEFENSE", "AttackResults", "Figures", "Run", "collect", "read_defense", "read_no_defense", "Cell",
           "Table", "build_table", "leaderboard_rows", "render_backdoorbench", "render_extras", "render_csv", "render_latex",
           "render_markdown"]
