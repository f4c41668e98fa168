#!/usr/bin/env bash
# Paper Table 8: GTSRB, PreAct-ResNet18, poisoning ratio 10%: 6 attacks x (no defense + 7).
# Run from a BackdoorBench root after 'sau-plugin install-into .'.
# The grid is sau_plugin/bench/tables/table8.yaml; this runs 'sau-plugin bench table8' (--help for options)
# with PYTHON (default python) for the plugin and for every command of the grid.
exec "${PYTHON:-python}" -m sau_plugin bench table8 --python "${PYTHON:-python}" "$@"
