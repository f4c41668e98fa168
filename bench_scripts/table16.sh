#!/usr/bin/env bash
# Paper Table 16: all-to-all attacks (target (y + 1) mod K) on CIFAR-10, PreAct-ResNet18, 10%:
# 7 attacks x (no defense + ANP, FP, NC, NAD, EP, i-BAU, SAU).
# Run from a BackdoorBench root after 'sau-plugin install-into .'.
# The grid is sau_plugin/bench/tables/table16.yaml; this runs 'sau-plugin bench table16' (--help for options)
# with PYTHON (default python) for the plugin and for every command of the grid.
exec "${PYTHON:-python}" -m sau_plugin bench table16 --python "${PYTHON:-python}" "$@"
