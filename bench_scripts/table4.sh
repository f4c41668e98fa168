#!/usr/bin/env bash
# Paper Table 4: CIFAR-10, PreAct-ResNet18, poisoning ratios 10% to 50%: BadNets, Blended and LF
# against no defense and SAU (3 attacks x 5 ratios x 2 runs; the 10% runs are Table 2's).
# Run from a BackdoorBench root after 'sau-plugin install-into .'; --help for options (--pratios 0.2,0.3).
set -euo pipefail
# shellcheck source=bench_scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

TABLE=table4
CAPTION="Table 4: CIFAR-10, PreAct-ResNet18, poisoning ratios 10-50%"
DATASET=cifar10
MODEL=preactresnet18
PRATIOS=(0.1 0.2 0.3 0.4 0.5)
ATTACKS=(badnet blended lf)
DEFENSES=("sau=SAU")
bench_main "$@"
