#!/usr/bin/env bash
# Paper Table 6: CIFAR-10, VGG19, poisoning ratio 10%: 7 attacks x (no defense, FP, NC, NAD, i-BAU, SAU).
# Run from a BackdoorBench root after 'sau-plugin install-into .'; --help for options.
set -euo pipefail
# shellcheck source=bench_scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

TABLE=table6
CAPTION="Table 6: CIFAR-10, VGG19, poisoning ratio 10%"
DATASET=cifar10
MODEL=vgg19
PRATIOS=(0.1)
ATTACKS=(badnet blended inputaware lf sig ssba wanet)
DEFENSES=(fp nc nad i-bau sau)  # VGG19 has no BatchNorm: ANP and EP do not apply (paper, appendix D.1)
bench_main "$@"
