#!/usr/bin/env bash
# Paper Table 14: SAU with five PGD configurations (all 5 steps) on CIFAR-10, PreAct-ResNet18, 10%:
#   Config 1 L_inf bound 0.2 step 0.2 (the default run, shared with Table 2), Config 2 L_inf 0.1 / 0.1,
#   Config 3 L_inf 0.2 / 0.1, Config 4 L2 bound 5 step 0.2, Config 5 L1 bound 300 step 0.2.
# Run from a BackdoorBench root after 'sau-plugin install-into .'; --help for options.
set -euo pipefail
# shellcheck source=bench_scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

TABLE=table14
CAPTION="Table 14: SAU with different PGD configurations (CIFAR-10, PreAct-ResNet18, 10%)"
DATASET=cifar10
MODEL=preactresnet18
PRATIOS=(0.1)
ATTACKS=(badnet blended inputaware lf sig ssba wanet)
DEFENSES=("sau=Config 1 (Default)" "sau_linf_0.1_0.1=Config 2" "sau_linf_0.2_0.1=Config 3"
          "sau_l2_5_0.2=Config 4" "sau_l1_300_0.2=Config 5")
bench_main "$@"
