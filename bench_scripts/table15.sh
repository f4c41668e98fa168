#!/usr/bin/env bash
# Paper Table 15: SAU with 2500 / 1000 / 500 / 50 / 10 clean samples (of CIFAR-10's 50,000 training
# images; 2500 = the default 5%, shared with Table 2), PreAct-ResNet18, 10%: BadNets, Blended, LF.
# Run from a BackdoorBench root after 'sau-plugin install-into .'.
# The grid is sau_plugin/bench/tables/table15.yaml; this runs 'sau-plugin bench table15' (--help for options)
# with PYTHON (default python) for the plugin and for every command of the grid.
exec "${PYTHON:-python}" -m sau_plugin bench table15 --python "${PYTHON:-python}" "$@"
