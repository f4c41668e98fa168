#!/usr/bin/env bash
# Paper Table 16: all-to-all attacks (target (y + 1) mod K) on CIFAR-10, PreAct-ResNet18, 10%:
# 7 attacks x (no defense + ANP, FP, NC, NAD, EP, i-BAU, SAU).
# Run from a BackdoorBench root after 'sau-plugin install-into .'; --help for options.
set -euo pipefail
# shellcheck source=bench_scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

TABLE=table16
CAPTION="Table 16: all-to-all attacks (CIFAR-10, PreAct-ResNet18, 10%)"
DATASET=cifar10
MODEL=preactresnet18
PRATIOS=(0.1)
LABEL_TRANS=all2all
ATTACKS=(badnet blended inputaware lf sig ssba wanet)
DEFENSES=(anp fp nc nad ep i-bau sau)
bench_main "$@"
