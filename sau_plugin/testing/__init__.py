"""Oracles for the tests and the benchmarks; never imported by the plugin's run path.

:mod:`.reference` re-states the reference's pass structure literally (for the float64
equivalence tests and ``bench_scripts/speed.py``'s reference mode).
"""
