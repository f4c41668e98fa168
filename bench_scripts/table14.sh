#!/usr/bin/env bash
# Paper Table 14: SAU with five PGD configurations (all 5 steps) on CIFAR-10, PreAct-ResNet18, 10%:
#   Config 1 L_inf bound 0.2 step 0.2 (the default run, shared with Table 2), Config 2 L_inf 0.1 / 0.1,
#   Config 3 L_inf 0.2 / 0.1, Config 4 L2 bound 5 step 0.2, Config 5 L1 bound 300 step 0.2.
# Run from a BackdoorBench root after 'sau-plugin install-into .'.
# The grid is sau_plugin/bench/tables/table14.yaml; this runs 'sau-plugin bench table14' (--help for options)
# with PYTHON (default python) for the plugin and for every command of the grid.
exec "${PYTHON:-python}" -m sau_plugin bench table14 --python "${PYTHON:-python}" "$@"
