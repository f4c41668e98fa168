#!/usr/bin/env bash
# Paper Table 15: SAU with 2500 / 1000 / 500 / 50 / 10 clean samples (of CIFAR-10's 50,000 training
# images; 2500 = the default 5%, shared with Table 2), PreAct-ResNet18, 10%: BadNets, Blended, LF.
# Run from a BackdoorBench root after 'sau-plugin install-into .'; --help for options.
set -euo pipefail
# shellcheck source=bench_scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

TABLE=table15
CAPTION="Table 15: SAU with different numbers of clean samples (CIFAR-10, PreAct-ResNet18, 10%)"
DATASET=cifar10
MODEL=preactresnet18
PRATIOS=(0.1)
ATTACKS=(badnet blended lf)
DEFENSES=("sau=SAU-2500" "sau_n1000=SAU-1000" "sau_n500=SAU-500" "sau_n50=SAU-50" "sau_n10=SAU-10")
bench_main "$@"
