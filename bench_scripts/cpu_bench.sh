#!/usr/bin/env bash
# CPU benchmark on the offline default data (real MNIST digits, no download, no GPU): every
# generator attack against no defense, fine-tuning (FT), vanilla adversarial training (C+D), SAU (A+B)
# and the two ablations A+D and C+B (paper Table 5), then the report table. Run from the plugin's checkout.
# The grid is sau_plugin/bench/tables/cpu_bench.yaml; this runs 'sau-plugin bench cpu_bench' (--help for options)
# with PYTHON (default python) for the plugin and for every command of the grid.
exec "${PYTHON:-python}" -m sau_plugin bench cpu_bench --python "${PYTHON:-python}" "$@"
