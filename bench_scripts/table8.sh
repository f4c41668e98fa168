#!/usr/bin/env bash
# Paper Table 8: GTSRB, PreAct-ResNet18, poisoning ratio 10%: 6 attacks x (no defense + 7).
# Run from a BackdoorBench root after 'sau-plugin install-into .'; --help for options.
set -euo pipefail
# shellcheck source=bench_scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

TABLE=table8
CAPTION="Table 8: GTSRB, PreAct-ResNet18, poisoning ratio 10%"
DATASET=gtsrb
MODEL=preactresnet18
PRATIOS=(0.1)
ATTACKS=(badnet blended inputaware lf ssba wanet)  # no SIG, as in the paper
DEFENSES=(anp fp nc nad ep i-bau sau)
bench_main "$@"
