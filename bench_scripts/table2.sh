#!/usr/bin/env bash
# Paper Table 2: CIFAR-10, PreAct-ResNet18, poisoning ratio 10%: 7 attacks against no defense,
# ANP (pruning threshold 0.4), FP, NC, NAD, EP, i-BAU and SAU (7 x 8 runs).
# Run from a BackdoorBench root after 'sau-plugin install-into .'; --help for options.
set -euo pipefail
# shellcheck source=bench_scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

TABLE=table2
CAPTION="Table 2: CIFAR-10, PreAct-ResNet18, poisoning ratio 10%"
DATASET=cifar10
MODEL=preactresnet18
PRATIOS=(0.1)
ATTACKS=(badnet blended inputaware lf sig ssba wanet)
DEFENSES=(anp fp nc nad ep i-bau sau)
bench_main "$@"
