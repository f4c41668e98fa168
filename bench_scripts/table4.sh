#!/usr/bin/env bash
# Paper Table 4: CIFAR-10, PreAct-ResNet18, poisoning ratios 10% to 50%: BadNets, Blended and LF
# against no defense and SAU (3 attacks x 5 ratios x 2 runs; the 10% runs are Table 2's).
# Run from a BackdoorBench root after 'sau-plugin install-into .'.
# The grid is sau_plugin/bench/tables/table4.yaml; this runs 'sau-plugin bench table4' (--help for options)
# with PYTHON (default python) for the plugin and for every command of the grid.
exec "${PYTHON:-python}" -m sau_plugin bench table4 --python "${PYTHON:-python}" "$@"
