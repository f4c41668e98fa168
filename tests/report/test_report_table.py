"""Report table logic on synthetic record trees: layout, DER, Average, marks, missing runs, NaN."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from sau_plugin.report.collect import NO_DEFENSE, AttackResults, Figures, Run, collect
from sau_plugin.report.table import (AVERAGE, BEST, MISSING, NA, NAN, SECOND, VALUE, build_table, der_cell,
                                     render_csv, render_latex, render_markdown)

from tests.helpers.records import RecordTree

PAPER = [("anp", "ANP"), ("fp", "FP"), ("nc", "NC"), ("nad", "NAD"), ("ep", "EP"), ("i-bau", "i-BAU"), ("sau", "SAU")]

# Paper Table 2 (CIFAR-10, PreAct-ResNet18, 10%), rows BadNets and Input-Aware, as fractions.
BADNETS = {"none": (.9132, .9503, .0467), "anp": (.9088, .0488, .8722), "fp": (.9131, .5713, .4162),
           "nc": (.8905, .0127, .8916), "nad": (.8987, .0214, .8871), "ep": (.8966, .0188, .8951),
           "i-bau": (.8915, .0121, .8888), "sau": (.8931, .0153, .8881)}
INPUTAWARE = {"none": (.9067, .9826, .0166), "anp": (.9104, .0132, .8671), "fp": (.9174, .0004, .4454),
              "nc": (.9261, .0076, .9087), "nad": (.9318, .0168, .9112), "ep": (.8986, .0223, .8520),
              "i-bau": (.9029, .6336, .3270), "sau": (.9159, .0127, .8854)}


def make_tree(root: Path, rows: dict) -> RecordTree:
    tree = RecordTree(root)
    for attack, figs in rows.items():
        tree.attack(attack, *figs["none"])
        for name, _ in PAPER:
            if name in figs:
                tree.defense(name, attack, *figs[name])
    return tree


@pytest.fixture()
def table2(tmp_path):
    make_tree(tmp_path / "record", {"badnet": BADNETS, "inputaware": INPUTAWARE})
    results = collect(tmp_path / "record", [("badnet", "BadNets"), ("inputaware", "Input-Aware")], [n for n, _ in PAPER])
    return build_table(results, PAPER)


def test_layout_rows_columns_and_paper_values(table2):
    assert [c.label for c in table2.columns] == ["No Defense", "ANP", "FP", "NC", "NAD", "EP", "i-BAU", "SAU"]
    assert table2.rows == ("BadNets", "Input-Aware", AVERAGE)
    assert table2.cell("BadNets", NO_DEFENSE, "acc").text == "91.32"
    assert table2.cell("BadNets", NO_DEFENSE, "asr").text == "95.03"
    assert table2.cell("BadNets", NO_DEFENSE, "ra").text == "4.67"
    assert table2.cell("BadNets", NO_DEFENSE, "der").kind == NA
    assert table2.cell("BadNets", "sau", "acc").text == "89.31"
    assert table2.cell("BadNets", "sau", "ra").text == "88.81"
    # each defense read from its own file: ANP's one-row table, FP's fine-tuning summary, NC's summary ...
    assert table2.cell("Input-Aware", "fp", "asr").text == "0.04"
    assert table2.cell("Input-Aware", "ep", "ra").text == "85.20"


def test_markdown_layout_matches_the_paper_blocks(table2):
    md = render_markdown(table2).splitlines()
    assert md[0] == "| Defense | No Defense |  |  |  | ANP |  |  |  | FP |  |  |  | NC |  |  |  |"
    assert md[2] == "| Attack" + " | ACC | ASR | R-ACC | DER" * 4 + " |"
    assert md[3].startswith("| BadNets | 91.32 | 95.03 | 4.67 | N/A | <u>90.88</u> | 4.88 | 87.22 | 94.86 | **91.31** |")
    second_block = md.index("| Defense | NAD |  |  |  | EP |  |  |  | i-BAU |  |  |  | SAU |  |  |  |")
    assert md[second_block + 3].startswith("| BadNets | 89.87 | 2.14 | 88.71 | 95.72 |")
    assert md[second_block + 5].startswith("| Average |")
    one_block = render_markdown(table2, block_size=0).splitlines()
    assert one_block[0].count("|") == 1 + 4 * 8 + 1


def test_der_matches_eq_14(table2):
    # DER by eq. (14): (0.9350 - 0.0201 + 1) / 2 = 95.745 %
    assert table2.cell("BadNets", "sau", "der").value == pytest.approx(95.745, abs=1e-9)
    # ACC rose (NC on Input-Aware): max(0, dACC) = 0, DER = (0.9826 - 0.0076 + 1) / 2
    assert table2.cell("Input-Aware", "nc", "der").value == pytest.approx(98.75, abs=1e-9)
    # i-BAU on Input-Aware: (0.9826 - 0.6336 - (0.9067 - 0.9029) + 1) / 2
    assert table2.cell("Input-Aware", "i-bau", "der").value == pytest.approx(67.26, abs=1e-9)


def test_der_is_zero_gain_when_asr_rises():
    before = Run(Figures(.90, .10, .5, "x"))
    after = Run(Figures(.80, .30, .5, "y"))
    assert der_cell(before, after).value == pytest.approx(100 * (0 - 0.10 + 1) / 2)


def test_average_row_means_each_column_and_averages_der(table2):
    acc = (91.32 + 90.67) / 2
    assert table2.cell(AVERAGE, NO_DEFENSE, "acc").value == pytest.approx(acc)
    assert table2.cell(AVERAGE, NO_DEFENSE, "der").kind == NA
    ders = [table2.cell(a, "sau", "der").value for a in ("BadNets", "Input-Aware")]
    assert ders == [pytest.approx(95.745), pytest.approx(98.495)]
    assert table2.cell(AVERAGE, "sau", "der").value == pytest.approx(97.12)
    # the mean of the DERs (as the paper's Average row), not the DER of the mean figures (97.35 here:
    # SAU's ACC fell on BadNets but rose on Input-Aware, and max(0, .) does not commute with the mean)
    mean = lambda a, b: (a + b) / 2  # noqa: E731
    der_of_means = 100 * (mean(.9503, .9826) - mean(.0153, .0127) - (mean(.9132, .9067) - mean(.8931, .9159)) + 1) / 2
    assert der_of_means == pytest.approx(97.35)
    assert table2.cell(AVERAGE, "sau", "asr").text == "1.40"


def test_best_and_second_marks(table2):
    mark = lambda row, d, m: table2.cell(row, d, m).mark  # noqa: E731
    # BadNets ACC: FP 91.31 best, ANP 90.88 second (paper Table 2)
    assert mark("BadNets", "fp", "acc") == BEST and mark("BadNets", "anp", "acc") == SECOND
    # ASR: lower is better: i-BAU 1.21 best, NC 1.27 second
    assert mark("BadNets", "i-bau", "asr") == BEST and mark("BadNets", "nc", "asr") == SECOND
    # R-ACC: EP 89.51 best, NC 89.16 second
    assert mark("BadNets", "ep", "ra") == BEST and mark("BadNets", "nc", "ra") == SECOND
    # DER: i-BAU 95.83 best
    assert mark("BadNets", "i-bau", "der") == BEST
    # exactly one best and one second per row and metric here (no ties), never on No Defense
    for row in table2.rows:
        for m in ("acc", "asr", "ra", "der"):
            marks = [table2.cell(row, d, m).mark for d, _ in PAPER]
            assert table2.cell(row, NO_DEFENSE, m).mark is None
            if (row, m) == (AVERAGE, "acc"):
                continue  # a real tie, below
            assert marks.count(BEST) == 1 and marks.count(SECOND) == 1, (row, m, marks)
    # Average ACC: FP (91.31 + 91.74) / 2 and NAD (89.87 + 93.18) / 2 tie at 91.525: both bold,
    # and the next value (ANP, (90.88 + 91.04) / 2 = 90.96) ranks third: no underline
    assert table2.cell(AVERAGE, "fp", "acc").value == pytest.approx(table2.cell(AVERAGE, "nad", "acc").value)
    assert mark(AVERAGE, "fp", "acc") == BEST and mark(AVERAGE, "nad", "acc") == BEST
    assert [mark(AVERAGE, d, "acc") for d, _ in PAPER].count(SECOND) == 0
    # the Average row is ranked too: mean ASR NC (1.27 + 0.76) / 2 best, SAU (1.53 + 1.27) / 2 second
    assert mark(AVERAGE, "nc", "asr") == BEST and mark(AVERAGE, "sau", "asr") == SECOND


def test_marks_rendered_in_every_format(table2):
    md = render_markdown(table2)
    assert "**91.31**" in md and "<u>90.88</u>" in md
    tex = render_latex(table2)
    assert r"\textbf{91.31}" in tex and r"\underline{90.88}" in tex
    assert r"\multicolumn{4}{c}{i-BAU}" in tex and r"\cmidrule(lr){2-5}" in tex
    assert r"\midrule" in tex and tex.count(r"\begin{tabular}") == 2
    csv_text = render_csv(table2).splitlines()
    assert csv_text[0].startswith("Attack,No Defense ACC,No Defense ASR,No Defense R-ACC,No Defense DER,ANP ACC")
    assert csv_text[1].startswith("BadNets,91.32,95.03,4.67,N/A,90.88,4.88,87.22,94.86,91.31,")
    assert "**" not in render_csv(table2)


def _results(**figs):
    base = Run(Figures(.90, .95, .05, "attack"))
    runs = {name: (Run(Figures(*f, name)) if f is not None else Run(None, (f"{name}: not run",)))
            for name, f in figs.items()}
    return [AttackResults("a", "A", base, runs)]


def test_ties_share_a_mark_and_compare_as_printed():
    # 0.88004 and 0.87996 both print as 88.00: both best, and no second (competition ranking)
    results = _results(x=(.88004, .02, .8), y=(.87996, .03, .8), z=(.85, .03, .7))
    table = build_table(results, [("x", "X"), ("y", "Y"), ("z", "Z")])
    assert [table.cell("A", d, "acc").mark for d in "xyz"] == [BEST, BEST, None]
    assert [table.cell("A", d, "ra").mark for d in "xyz"] == [BEST, BEST, None]
    # a single best, then a tie: the tie shares second
    assert [table.cell("A", d, "asr").mark for d in "xyz"] == [BEST, SECOND, SECOND]


def test_single_defense_is_best_without_second():
    table = build_table(_results(x=(.88, .02, .8)), [("x", "X")])
    assert table.cell("A", "x", "acc").mark == BEST
    assert table.cell(AVERAGE, "x", "acc").mark == BEST


def test_missing_run_is_shown_missing_and_never_filled_in(tmp_path):
    rows = {"badnet": dict(BADNETS), "inputaware": dict(INPUTAWARE)}
    del rows["inputaware"]["ep"]
    make_tree(tmp_path / "record", rows)
    results = collect(tmp_path / "record", [("badnet", "BadNets"), ("inputaware", "Input-Aware")],
                      [n for n, _ in PAPER])
    table = build_table(results, PAPER)
    for m in ("acc", "asr", "ra", "der"):
        assert table.cell("Input-Aware", "ep", m).kind == MISSING
        assert table.cell("Input-Aware", "ep", m).text == "missing"
        assert table.cell(AVERAGE, "ep", m).kind == MISSING  # no average over a partial column
    assert table.cell("BadNets", "ep", "acc").kind == VALUE  # the other attack keeps its figures
    assert table.cell(AVERAGE, "sau", "acc").kind == VALUE  # complete columns still average
    # missing cells take no part in the ranking
    assert table.cell("Input-Aware", "ep", "acc").mark is None
    assert any("inputaware/defense/ep: not run" in n for n in table.notes)
    assert "| Input-Aware | 93.18" not in render_markdown(table)  # NAD is in block 2, EP missing there
    assert "| missing | missing | missing | missing |" in render_markdown(table)


def test_missing_attack_row(tmp_path):
    make_tree(tmp_path / "record", {"badnet": BADNETS})
    results = collect(tmp_path / "record", [("badnet", "BadNets"), ("lf", "LF")], ["sau"])
    table = build_table(results, [("sau", "SAU")])
    assert table.cell("LF", NO_DEFENSE, "acc").kind == MISSING
    assert table.cell("LF", NO_DEFENSE, "der").kind == NA
    assert table.cell("LF", "sau", "der").kind == MISSING
    assert table.cell(AVERAGE, NO_DEFENSE, "asr").kind == MISSING
    assert sum("lf: no such attack folder" in n for n in table.notes) == 1


def test_attack_without_its_summary_leaves_der_missing(tmp_path):
    make_tree(tmp_path / "record", {"badnet": BADNETS})
    (tmp_path / "record" / "badnet" / "attack_df_summary.csv").unlink()
    table = build_table(collect(tmp_path / "record", [("badnet", "BadNets")], ["sau"]), [("sau", "SAU")])
    assert table.cell("BadNets", NO_DEFENSE, "acc").kind == MISSING
    assert table.cell("BadNets", "sau", "acc").text == "89.31"
    assert table.cell("BadNets", "sau", "der").kind == MISSING


def test_defense_csv_with_nan(tmp_path):
    rows = {"badnet": dict(BADNETS), "inputaware": dict(INPUTAWARE)}
    rows["inputaware"]["sau"] = (.9159, math.nan, .8854)  # SAU's ASR went NaN in its last epoch
    rows["badnet"]["anp"] = (math.nan, .0488, .8722)  # ANP's one-row table holds a NaN ACC
    make_tree(tmp_path / "record", rows)
    table = build_table(collect(tmp_path / "record", [("badnet", "BadNets"), ("inputaware", "Input-Aware")],
                                [n for n, _ in PAPER]), PAPER)
    assert table.cell("Input-Aware", "sau", "asr").kind == NAN
    assert table.cell("Input-Aware", "sau", "asr").text == "NaN"
    assert table.cell("Input-Aware", "sau", "acc").text == "91.59"  # the other figures of the run stay
    assert table.cell("Input-Aware", "sau", "der").kind == NAN  # DER needs ASR: NaN, not 0 from max(0, nan)
    assert table.cell("BadNets", "anp", "acc").kind == NAN
    assert table.cell("BadNets", "anp", "der").kind == NAN
    assert table.cell("BadNets", "anp", "asr").text == "4.88"
    assert table.cell(AVERAGE, "sau", "asr").kind == NAN
    assert table.cell(AVERAGE, "sau", "acc").kind == VALUE
    # NaN is never ranked: the best Input-Aware DER is FP's, SAU's NaN has no mark
    assert table.cell("Input-Aware", "sau", "asr").mark is None
    assert table.cell("Input-Aware", "fp", "der").mark == BEST
    assert any("inputaware/defense/sau/sau_df_summary.csv: the run reports NaN" in n for n in table.notes)
    assert "| NaN |" in render_markdown(table)
    assert "NaN" in render_csv(table) and "NaN" in render_latex(table)


def test_nan_in_no_defense_makes_every_der_nan():
    base = Run(Figures(.9, math.nan, .05, "attack"))
    res = [AttackResults("a", "A", base, {"x": Run(Figures(.88, .02, .8, "x"))})]
    table = build_table(res, [("x", "X")])
    assert table.cell("A", NO_DEFENSE, "asr").kind == NAN
    assert table.cell("A", "x", "der").kind == NAN


def test_latex_escapes_labels():
    res = [AttackResults("a", "BadNets 10%", Run(Figures(.9, .9, .05, "s")), {"a+d": Run(Figures(.8, .1, .6, "s"))})]
    tex = render_latex(build_table(res, [("a+d", "A&D_1")]), caption="CIFAR-10 10%")
    assert r"BadNets 10\%" in tex and r"A\&D\_1" in tex and r"\caption{CIFAR-10 10\%}" in tex
