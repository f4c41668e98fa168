#!/usr/bin/env bash
# CPU benchmark on the offline default data (real MNIST digits, no download, no GPU):
# every generator attack (BadNets, Blended, SIG, WaNet, LF, all-to-all BadNets) against
# no defense, fine-tuning (FT), vanilla adversarial training (C+D), SAU (A+B) and the two
# ablations A+D and C+B (paper Table 5), then the report table.
#
# Sized for a 2-core CPU by the demo config (SAU_YAML); runs anywhere the plugin imports:
#   bench_scripts/cpu_bench.sh [--attacks badnet,sig] [--defenses sau,ft] [--dry-run]
# Environment: PYTHON, RECORD_DIR (default record_cpu), SAU_YAML, DEVICE (default cpu),
#   PRATIO (default 0.1), OMP_NUM_THREADS (default 2), REPORT_DIR, LEADERBOARD.
set -euo pipefail
RECORD_DIR=${RECORD_DIR:-record_cpu}  # defaults that differ from lib.sh's, set before sourcing it
DEVICE=${DEVICE:-cpu}
# shellcheck source=bench_scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

TABLE=cpu_bench
CAPTION="CPU benchmark: offline default (MNIST), PreAct-ResNet18, poisoning ratio ${PRATIO:-0.1 (SIG 0.09), the generator defaults}"
DATASET=mnist
MODEL=preactresnet18
SAU_YAML=${SAU_YAML:-defense_configs/sau/demo_mnist.yaml}
PRATIOS=("${PRATIO:-0.1}")
ATTACKS=(badnet blended sig wanet lf badnet_all2all)
DEFENSES=(ft "at=Vanilla AT" sau a+d c+b)
# leaderboard metadata for generator folders written before the generator wrote info.pickle
REPORT_EXTRA=(--dataset "$DATASET" --model "$MODEL" --pratio "${PRATIOS[0]}")
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

# hooks (see lib.sh): the plugin's own attack generator and defense instead of BackdoorBench's scripts
bench_attack_folder() { echo "$1"; }

bench_attack_cmd() {  # attack ratio folder; without PRATIO the generator's per-attack defaults apply
    CMD=("$PYTHON" -m sau_plugin attack --attack "$1" --record_dir "$RECORD_DIR" --name "$3" --no_progress)
    if [[ -n ${PRATIO:-} ]]; then CMD+=(--pratio "$2"); fi
}

bench_defense_cmd() {  # variant folder
    CMD=("$PYTHON" -m sau_plugin defend --result_file "$2" --record_dir "$RECORD_DIR" --yaml_path "$SAU_YAML"
         --dataset "$DATASET" --device "$DEVICE" --variant "$1" --defense_name "$1")
    sau_resume_arg "$2" "$1"
}

bench_attack_needs() { :; }

bench_check_root() {
    "$PYTHON" -c "import sau_plugin" 2>/dev/null || echo "'$PYTHON -c \"import sau_plugin\"' fails: install the plugin"
    [[ -f $SAU_YAML ]] || echo "no demo config at $SAU_YAML: set SAU_YAML"
    return 0
}

bench_main "$@"
