"""The paper's result tables, as pure functions: runs in, cells with marks out, text out.

Layout (paper Table 2): one row per attack plus an ``Average`` row; per defense the
columns ACC, ASR, R-ACC and DER, in percent with two decimals; ``No Defense`` first,
its DER ``N/A``. Among the defenses (No Defense excluded, as in the paper) the best
value of each row and metric is bold and the second best underlined: higher is better
for ACC, R-ACC and DER, lower for ASR. Values are compared as printed (two decimals),
so equal-looking numbers get the same mark; ties share a mark, and when several
defenses tie for best none is second (competition ranking, 1-1-3).

Nothing is ever filled in: a run without figures is ``missing``; a figure the run
recorded as NaN is ``NaN``; a DER that needs either is the same. An Average cell is
the mean over all attacks of that column, or ``missing`` / ``NaN`` when any of them is.
DER (eq. 14) is computed per attack from unrounded fractions, and averaged per column
(the paper's Average DER is the mean of the per-attack DERs).
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from typing import Iterable, List, Mapping, Optional, Sequence, Tuple

from ..metrics import der
from .collect import NO_DEFENSE, AttackResults, Figures, Run

METRICS = ("acc", "asr", "ra", "der")
HEADERS = {"acc": "ACC", "asr": "ASR", "ra": "R-ACC", "der": "DER"}
HIGHER_IS_BETTER = {"acc": True, "asr": False, "ra": True, "der": True}
AVERAGE = "Average"
DECIMALS = 2

VALUE, MISSING, NAN, NA = "value", "missing", "nan", "na"
BEST, SECOND = "best", "second"


@dataclass(frozen=True)
class Cell:
    kind: str  # VALUE, MISSING, NAN or NA
    value: Optional[float] = None  # percent, unrounded
    mark: Optional[str] = None  # BEST, SECOND or None

    @property
    def text(self) -> str:
        if self.kind == VALUE:
            return f"{self.value:.{DECIMALS}f}"
        return {MISSING: "missing", NAN: "NaN", NA: "N/A"}[self.kind]


@dataclass(frozen=True)
class Column:
    key: str  # defense folder name, or NO_DEFENSE
    label: str


@dataclass(frozen=True)
class Table:
    columns: Tuple[Column, ...]  # No Defense first
    rows: Tuple[str, ...]  # attack labels, then AVERAGE
    cells: Tuple[Tuple[Tuple[Cell, ...], ...], ...]  # [row][column][metric index]
    notes: Tuple[str, ...] = ()

    def cell(self, row: str, column: str, metric: str) -> Cell:
        """Look a cell up by row label, column key (defense name or NO_DEFENSE) and metric."""
        c = [col.key for col in self.columns].index(column)
        return self.cells[self.rows.index(row)][c][METRICS.index(metric)]


# ---------------------------------------------------------------------------------------------------------
# building

def _figure_cell(figures: Optional[Figures], attr: str) -> Cell:
    if figures is None:
        return Cell(MISSING)
    v = getattr(figures, attr)
    return Cell(NAN) if math.isnan(v) else Cell(VALUE, 100.0 * v)


def der_cell(before: Run, after: Run) -> Cell:
    """DER (eq. 14) of ``after`` against ``before``; missing / NaN when an input is."""
    if before.figures is None or after.figures is None:
        return Cell(MISSING)
    b, a = before.figures, after.figures
    inputs = (b.acc, b.asr, a.acc, a.asr)
    if any(math.isnan(x) for x in inputs):  # max(0, nan) is 0 in Python: never let NaN through der()
        return Cell(NAN)
    return Cell(VALUE, der(*inputs))


def _average(cells: Sequence[Cell]) -> Cell:
    if not cells:
        return Cell(MISSING)
    kinds = {c.kind for c in cells}
    if NA in kinds:
        return Cell(NA)
    if MISSING in kinds:
        return Cell(MISSING)
    if NAN in kinds:
        return Cell(NAN)
    return Cell(VALUE, sum(c.value for c in cells) / len(cells))


def _marked(cells: Sequence[Cell], higher_is_better: bool) -> List[Cell]:
    """Bold the best, underline the second best, comparing values as printed.

    Competition ranking: cells that tie share the mark of their rank; when several
    tie for best, no value is second (the next one ranks third).
    """
    shown = [round(c.value, DECIMALS) for c in cells if c.kind == VALUE]
    ordered = sorted(set(shown), reverse=higher_is_better)
    rank = {}
    if ordered:
        rank[ordered[0]] = BEST
        if len(ordered) > 1 and shown.count(ordered[0]) == 1:
            rank[ordered[1]] = SECOND
    return [Cell(c.kind, c.value, rank.get(round(c.value, DECIMALS))) if c.kind == VALUE else c for c in cells]


def build_table(results: Sequence[AttackResults], defenses: Sequence[Tuple[str, str]],
                no_defense_label: str = "No Defense", extra_notes: Iterable[str] = ()) -> Table:
    """The table for ``results`` (one per attack, in row order) and ``defenses`` ((name, label), in column order)."""
    columns = (Column(NO_DEFENSE, no_defense_label),) + tuple(Column(n, lab) for n, lab in defenses)
    grid: List[List[List[Cell]]] = []
    notes: List[str] = []
    for res in results:
        row = [[_figure_cell(res.no_defense.figures, a) for a in ("acc", "asr", "ra")] + [Cell(NA)]]
        notes.extend(res.no_defense.notes)
        for name, _ in defenses:
            run = res.defenses.get(name) or Run(None, (f"{res.folder}/defense/{name}: not collected",))
            row.append([_figure_cell(run.figures, a) for a in ("acc", "asr", "ra")] + [der_cell(res.no_defense, run)])
            notes.extend(run.notes)
        grid.append(row)
    average = [[_average([grid[r][c][m] for r in range(len(grid))]) for m in range(len(METRICS))]
               for c in range(len(columns))]
    if any(cell.kind in (MISSING, NAN) for col in average for cell in col):
        notes.append("Average: shown only for columns with figures for every attack (otherwise missing / NaN)")
    grid.append(average)
    # marks: per row and metric, across the defense columns (No Defense is the reference, not a competitor)
    for row in grid:
        for m, metric in enumerate(METRICS):
            marked = _marked([row[c][m] for c in range(1, len(columns))], HIGHER_IS_BETTER[metric])
            for c, cell in enumerate(marked, start=1):
                row[c][m] = cell
    notes.extend(extra_notes)
    return Table(columns, tuple(r.label for r in results) + (AVERAGE,),
                 tuple(tuple(tuple(col) for col in row) for row in grid), tuple(dict.fromkeys(notes)))


# ---------------------------------------------------------------------------------------------------------
# rendering

def _blocks(table: Table, block_size: int) -> List[range]:
    n = len(table.columns)
    size = n if block_size <= 0 else block_size
    return [range(i, min(n, i + size)) for i in range(0, n, size)]


def _with_mark(cell: Cell, formats: Mapping[str, str]) -> str:
    """The cell's text in the format of its mark (``formats[BEST]``, ``formats[SECOND]``), else plain."""
    return formats[cell.mark].format(cell.text) if cell.mark in formats else cell.text


MD_MARKS = {BEST: "**{}**", SECOND: "<u>{}</u>"}
LATEX_MARKS = {BEST: r"\textbf{{{}}}", SECOND: r"\underline{{{}}}"}


def render_markdown(table: Table, block_size: int = 4, caption: Optional[str] = None) -> str:
    """Markdown, one table per block of ``block_size`` columns (the paper's two halves for 8 columns).

    Each block mirrors the paper: a ``Defense`` header row naming the defenses, then an
    ``Attack`` row naming the metrics. Best is ``**bold**``, second ``<u>underlined</u>``.
    """
    out: List[str] = [caption, ""] if caption else []
    for block in _blocks(table, block_size):
        header = ["Defense"]
        for c in block:
            header += [table.columns[c].label] + [""] * (len(METRICS) - 1)
        out.append("| " + " | ".join(header) + " |")
        out.append("|---" + "|---:" * (len(header) - 1) + "|")
        out.append("| " + " | ".join(["Attack"] + [HEADERS[m] for _ in block for m in METRICS]) + " |")
        for r, label in enumerate(table.rows):
            cells = [_with_mark(table.cells[r][c][m], MD_MARKS) for c in block for m in range(len(METRICS))]
            out.append("| " + " | ".join([label] + cells) + " |")
        out.append("")
    if table.notes:
        out.append("Notes:")
        out.extend(f"- {n}" for n in table.notes)
        out.append("")
    return "\n".join(out)


_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in text)


def render_latex(table: Table, block_size: int = 4, caption: Optional[str] = None) -> str:
    """A LaTeX ``table`` (booktabs rules) with one ``tabular`` per block; notes as comments."""
    out = [r"\begin{table}[t]", r"\centering", r"\small"]
    if caption:
        out.append(rf"\caption{{{latex_escape(caption)}}}")
    for block in _blocks(table, block_size):
        out.append(r"\begin{tabular}{l" + "cccc" * len(block) + "}")
        out.append(r"\toprule")
        out.append("Defense & " + " & ".join(rf"\multicolumn{{4}}{{c}}{{{latex_escape(table.columns[c].label)}}}"
                                             for c in block) + r" \\")
        out.append("".join(rf"\cmidrule(lr){{{2 + 4 * i}-{5 + 4 * i}}}" for i in range(len(block))))
        out.append("Attack & " + " & ".join(HEADERS[m] for _ in block for m in METRICS) + r" \\")
        out.append(r"\midrule")
        for r, label in enumerate(table.rows):
            if label == AVERAGE:
                out.append(r"\midrule")
            cells = [_with_mark(table.cells[r][c][m], LATEX_MARKS) for c in block for m in range(len(METRICS))]
            out.append(" & ".join([latex_escape(label)] + cells) + r" \\")
        out.append(r"\bottomrule")
        out.append(r"\end{tabular}")
    out.append(r"\end{table}")
    out.extend(f"% {n}" for n in table.notes)
    return "\n".join(out) + "\n"


def render_csv(table: Table) -> str:
    """One wide CSV table: ``Attack`` then ``<defense> <metric>`` columns; values as printed, no marks."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["Attack"] + [f"{col.label} {HEADERS[m]}" for col in table.columns for m in METRICS])
    for r, label in enumerate(table.rows):
        w.writerow([label] + [table.cells[r][c][m].text for c in range(len(table.columns)) for m in range(len(METRICS))])
    return buf.getvalue()


__all__ = ["Cell", "Column", "Table", "build_table", "der_cell", "render_markdown", "render_latex", "render_csv",
           "latex_escape", "METRICS", "AVERAGE", "VALUE", "MISSING", "NAN", "NA", "BEST", "SECOND"]
