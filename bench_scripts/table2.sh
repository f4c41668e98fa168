#!/usr/bin/env bash
# Paper Table 2: CIFAR-10, PreAct-ResNet18, poisoning ratio 10%: 7 attacks against no defense,
# ANP (pruning threshold 0.4), FP, NC, NAD, EP, i-BAU and SAU (7 x 8 runs).
# Run from a BackdoorBench root after 'sau-plugin install-into .'.
# The grid is sau_plugin/bench/tables/table2.yaml; this runs 'sau-plugin bench table2' (--help for options)
# with PYTHON (default python) for the plugin and for every command of the grid.
exec "${PYTHON:-python}" -m sau_plugin bench table2 --python "${PYTHON:-python}" "$@"
