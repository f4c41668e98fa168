#!/usr/bin/env bash
# Paper Table 7: Tiny ImageNet, VGG19, poisoning ratio 10%: 6 attacks x (no defense, FP, NC, NAD, i-BAU, SAU).
# Run from a BackdoorBench root after 'sau-plugin install-into .'.
# The grid is sau_plugin/bench/tables/table7.yaml; this runs 'sau-plugin bench table7' (--help for options)
# with PYTHON (default python) for the plugin and for every command of the grid.
exec "${PYTHON:-python}" -m sau_plugin bench table7 --python "${PYTHON:-python}" "$@"
