# shellcheck shell=bash
# bench_scripts/lib.sh: the engine shared by the paper-table scripts. Sourced, never run.
#
# A table script sets, then calls `bench_main "$@"`:
#   TABLE        short name (log and report file names), e.g. table2
#   CAPTION      caption of the printed table
#   DATASET      cifar10 | gtsrb | tiny | ...      MODEL  preactresnet18 | vgg19 | ...
#   PRATIOS      array of poisoning ratios (one per table except Table 4)
#   LABEL_TRANS  all2one (default) | all2all
#   ATTACKS      array of attack ids: badnet blended inputaware lf sig ssba wanet
#   DEFENSES     array of defense ids, optionally NAME=Label: anp fp nc nad ep i-bau sau,
#                or a SAU variant known to sau_variant_args (e.g. sau_l2_5_0.2)
#
# Every run is skipped when its result exists (record/<folder>/attack_result.pt for an
# attack, record/<folder>/defense/<name>/defense_result.pt for a defense: each script
# writes that file last). Attack folders are named <dataset>_<model>_<attack>_<ratio>
# (ratio 0.1 -> 0_1), with _all2all appended for all-to-all attacks.
#
# Commands follow BackdoorBench's README and defaults, run from its root:
#   python ./attack/<attack>.py --yaml_path ./config/attack/prototype/<dataset>.yaml
#       --bd_yaml_path ./config/attack/<attack>/default.yaml --model M --pratio P
#       --save_folder_name <folder> [--attack_label_trans all2all]
#   python ./defense/<name>.py --result_file <folder>
#       --yaml_path ./config/defense/<name>/<dataset>.yaml --dataset D --model M
#   (ANP: --pruning_by threshold --pruning_number 0.4, the paper's constant threshold)
#   python ./defense/sau_plugin.py ... --yaml_path ./config/defense/sau_plugin/<dataset>.yaml
#       --defense_name <name> [variant flags]      (after `sau-plugin install-into .`)
# The defenses get --model because they build the network from their YAML's model
# name (preactresnet18), not from the attack result.

PYTHON=${PYTHON:-python}
RECORD_DIR=${RECORD_DIR:-record}
LOG_DIR=${LOG_DIR:-}
REPORT_DIR=${REPORT_DIR:-bench_reports}
REPORT_FORMAT=${REPORT_FORMAT:-md}
LEADERBOARD=${LEADERBOARD:-$REPORT_DIR/leaderboard.csv}
LEADERBOARD_EXTRAS=${LEADERBOARD_EXTRAS:-$REPORT_DIR/leaderboard_extras.csv}
DEVICE=${DEVICE:-}
LABEL_TRANS=${LABEL_TRANS:-all2one}
ANP_PRUNING_THRESHOLD=${ANP_PRUNING_THRESHOLD:-0.4}

DRY_RUN=0
RUN_REPORT=1
SEL_ATTACKS=()
SEL_DEFENSES=()
SEL_PRATIOS=()
N_TOTAL=0
N_DONE=0
N_TODO=0
N_FAILED=0
FAILED_RUNS=()
CMD=()
VARIANT_ARGS=()
REPORT_EXTRA=()

bench_die() {
    echo "error: $*" >&2
    exit 2
}

bench_usage() {
    cat <<EOF
usage: $(basename "$0") [--attacks a,b] [--defenses x,y] [--pratios p,q] [--device DEV]
                  [--python PY] [--dry-run] [--no-report] [-h]

$CAPTION
  attacks:  ${ATTACKS[*]}
  defenses: $(bench_names "${DEFENSES[@]}")   ('none' = attacks only)
  ratios:   ${PRATIOS[*]}

Runs every (attack, ratio) and every defense on it, skipping runs whose result file
exists, then prints the table (sau-plugin report) and writes it to
$REPORT_DIR/$TABLE.$REPORT_FORMAT. Run from a BackdoorBench root after
'sau-plugin install-into .'. --dry-run prints the commands without running them.
Environment: PYTHON, DEVICE, RECORD_DIR, LOG_DIR, REPORT_DIR, REPORT_FORMAT, LEADERBOARD.
EOF
}

# names of NAME[=Label] entries
bench_names() {
    local entry out=()
    for entry in "$@"; do out+=("${entry%%=*}"); done
    echo "${out[*]}"
}

# split "a,b c" into the named array
bench_split() {
    local -n _into=$1
    local IFS=', '
    # shellcheck disable=SC2206  # word splitting on , and space is the point
    _into+=($2)
}

bench_parse_args() {
    while [[ $# -gt 0 ]]; do
        case "$1" in
            --attacks) [[ $# -ge 2 ]] || bench_die "--attacks needs a value"; bench_split SEL_ATTACKS "$2"; shift 2 ;;
            --defenses) [[ $# -ge 2 ]] || bench_die "--defenses needs a value"; bench_split SEL_DEFENSES "$2"; shift 2 ;;
            --pratios) [[ $# -ge 2 ]] || bench_die "--pratios needs a value"; bench_split SEL_PRATIOS "$2"; shift 2 ;;
            --device) [[ $# -ge 2 ]] || bench_die "--device needs a value"; DEVICE=$2; shift 2 ;;
            --python) [[ $# -ge 2 ]] || bench_die "--python needs a value"; PYTHON=$2; shift 2 ;;
            --dry-run|-n) DRY_RUN=1; shift ;;
            --no-report) RUN_REPORT=0; shift ;;
            -h|--help) bench_usage; exit 0 ;;
            *) bench_die "unknown argument '$1' (see --help)" ;;
        esac
    done
}

# keep only the selected entries of a table list; unknown selections are an error
# bench_select OUT_ARRAY "what" "${SELECTION[@]}" -- "${TABLE_LIST[@]}"
bench_select() {
    local -n _out=$1
    local what=$2
    shift 2
    local sel=() all=() entry name found
    while [[ $# -gt 0 && $1 != -- ]]; do sel+=("$1"); shift; done
    shift
    all=("$@")
    _out=()
    if [[ ${#sel[@]} -eq 0 ]]; then
        _out=("${all[@]}")
        return
    fi
    for name in "${sel[@]}"; do
        [[ $what == defenses && $name == none ]] && continue
        found=0
        for entry in "${all[@]}"; do
            if [[ ${entry%%=*} == "$name" ]]; then _out+=("$entry"); found=1; fi
        done
        [[ $found -eq 1 ]] || bench_die "$TABLE has no $what '$name' (it has: $(bench_names "${all[@]}"))"
    done
}

attack_label() {
    case "$1" in
        badnet) echo "BadNets" ;;
        blended) echo "Blended" ;;
        inputaware) echo "Input-Aware" ;;
        lf) echo "LF" ;;
        sig) echo "SIG" ;;
        ssba) echo "SSBA" ;;
        wanet) echo "WaNet" ;;
        badnet_all2all) echo "BadNets (all2all)" ;;
        *) echo "$1" ;;
    esac
}

# flags of the paper's SAU variants (Table 14: PGD configurations, Table 15: clean set
# sizes, counted on CIFAR-10's 50,000 training images). Sets VARIANT_ARGS; fails if unknown.
sau_variant_args() {
    case "$1" in
        sau) VARIANT_ARGS=() ;;  # defaults: L_inf, bound 0.2, step 0.2, 5 steps, 5% clean data
        sau_linf_0.1_0.1) VARIANT_ARGS=(--norm_type L_inf --trigger_norm 0.1 --adv_lr 0.1 --adv_steps 5) ;;
        sau_linf_0.2_0.1) VARIANT_ARGS=(--norm_type L_inf --trigger_norm 0.2 --adv_lr 0.1 --adv_steps 5) ;;
        sau_l2_5_0.2) VARIANT_ARGS=(--norm_type L2 --trigger_norm 5 --adv_lr 0.2 --adv_steps 5) ;;
        sau_l1_300_0.2) VARIANT_ARGS=(--norm_type L1 --trigger_norm 300 --adv_lr 0.2 --adv_steps 5) ;;
        sau_n1000) VARIANT_ARGS=(--ratio 0.02) ;;
        sau_n500) VARIANT_ARGS=(--ratio 0.01) ;;
        sau_n50) VARIANT_ARGS=(--ratio 0.001) ;;
        sau_n10) VARIANT_ARGS=(--ratio 0.0002) ;;
        *) return 1 ;;
    esac
}

ratio_tag() { echo "${1//./_}"; }
ratio_percent() { awk -v r="$1" 'BEGIN { printf "%g", r * 100 }'; }

# ---------------------------------------------------------------------------------------------
# hooks: BackdoorBench versions; cpu_bench.sh redefines them for the plugin's offline default

bench_attack_folder() {  # attack ratio
    local folder
    folder="${DATASET}_${MODEL}_$1_$(ratio_tag "$2")"
    [[ $LABEL_TRANS == all2all ]] && folder+="_all2all"
    echo "$folder"
}

bench_attack_cmd() {  # attack ratio folder
    CMD=("$PYTHON" "./attack/$1.py" --yaml_path "./config/attack/prototype/$DATASET.yaml"
         --bd_yaml_path "./config/attack/$1/default.yaml" --model "$MODEL" --pratio "$2"
         --save_folder_name "$3")
    [[ $LABEL_TRANS == all2all ]] && CMD+=(--attack_label_trans all2all)
    [[ -n $DEVICE ]] && CMD+=(--device "$DEVICE")
    return 0
}

bench_defense_cmd() {  # name folder
    local name=$1 folder=$2
    case "$name" in
        anp|fp|nc|nad|ep|i-bau)
            CMD=("$PYTHON" "./defense/$name.py" --result_file "$folder"
                 --yaml_path "./config/defense/$name/$DATASET.yaml" --dataset "$DATASET" --model "$MODEL")
            [[ $name == anp ]] && CMD+=(--pruning_by threshold --pruning_number "$ANP_PRUNING_THRESHOLD")
            ;;
        *)
            sau_variant_args "$name" || bench_die "unknown defense '$name' (no BackdoorBench script, no SAU variant)"
            CMD=("$PYTHON" ./defense/sau_plugin.py --result_file "$folder"
                 --yaml_path "./config/defense/sau_plugin/$DATASET.yaml" --dataset "$DATASET" --model "$MODEL"
                 --defense_name "$name" "${VARIANT_ARGS[@]}")
            sau_resume_arg "$folder" "$name"
            ;;
    esac
    [[ -n $DEVICE ]] && CMD+=(--device "$DEVICE")
    return 0
}

# an interrupted plugin run (its checkpoint there, no defense_result.pt yet) continues
# where it stopped instead of failing on the existing output folder
sau_resume_arg() {  # folder name
    if [[ -f $RECORD_DIR/$1/defense/$2/checkpoint/last.pt ]]; then CMD+=(--resume); fi
    return 0
}

# files an attack needs before it can run (BackdoorBench's defaults); prints the missing ones
bench_attack_needs() {  # attack
    local need=()
    case "$1" in
        badnet) need=(./resource/badnet/trigger_image.png) ;;
        blended) need=(./resource/blended/hello_kitty.jpeg) ;;
        lf) need=("./resource/lowFrequency/${DATASET}_${MODEL}_0_255.npy") ;;
        ssba) need=("./resource/ssba/${DATASET}_ssba_train_b1.npy" "./resource/ssba/${DATASET}_ssba_test_b1.npy") ;;
    esac
    local f
    for f in "${need[@]}"; do
        [[ -f $f ]] || echo "$f"
    done
    return 0
}

bench_check_root() {  # prints problems; empty output = fine
    [[ -f ./attack/prototype.py && -d ./defense && -d ./config ]] ||
        echo "not a BackdoorBench root (no ./attack/prototype.py): cd to BackdoorBench first"
    local entry
    for entry in "${RUN_DEFENSES[@]}"; do
        case "${entry%%=*}" in
            anp|fp|nc|nad|ep|i-bau) ;;
            *) [[ -f ./defense/sau_plugin.py ]] ||
                   echo "no ./defense/sau_plugin.py: run 'sau-plugin install-into .' first"
               break ;;
        esac
    done
    return 0
}

# ---------------------------------------------------------------------------------------------

bench_quote() { printf '%q ' "$@" | sed 's/ $//'; }

bench_log_path() {  # folder name
    echo "${LOG_DIR:-bench_logs/$TABLE}/$1.$2.log"
}

# run CMD (or print it); $1 = marker file, $2 = log path, $3 = description
bench_run() {
    local marker=$1 log=$2 what=$3
    N_TOTAL=$((N_TOTAL + 1))
    if [[ -f $marker ]]; then
        N_DONE=$((N_DONE + 1))
        if [[ $DRY_RUN -eq 1 ]]; then echo "# done: $what ($marker exists)"; else echo "[skip] $what: done"; fi
        return 0
    fi
    N_TODO=$((N_TODO + 1))
    if [[ $DRY_RUN -eq 1 ]]; then
        bench_quote "${CMD[@]}"
        echo
        return 0
    fi
    mkdir -p "$(dirname "$log")"
    echo "[run] $what: $(bench_quote "${CMD[@]}")"
    echo "      log: $log"
    local start=$SECONDS rc=0
    "${CMD[@]}" >"$log" 2>&1 || rc=$?
    if [[ $rc -eq 0 && -f $marker ]]; then
        echo "      ok ($((SECONDS - start)) s)"
        return 0
    fi
    [[ $rc -eq 0 ]] && echo "      exited 0 but wrote no $marker" || echo "      FAILED (exit $rc); see $log"
    N_FAILED=$((N_FAILED + 1))
    FAILED_RUNS+=("$what")
    return 1
}

# a run that cannot start: counted as failed (or shown in the dry run)
bench_blocked() {  # description reason
    N_TOTAL=$((N_TOTAL + 1))
    if [[ $DRY_RUN -eq 1 ]]; then
        echo "# blocked: $1: $2"
        return 0
    fi
    echo "[blocked] $1: $2"
    N_FAILED=$((N_FAILED + 1))
    FAILED_RUNS+=("$1 ($2)")
}

bench_grid() {
    local attack ratio folder entry name missing_files problem attack_ok marker
    for ratio in "${RUN_PRATIOS[@]}"; do
        for attack in "${RUN_ATTACKS[@]}"; do
            folder=$(bench_attack_folder "$attack" "$ratio")
            marker="$RECORD_DIR/$folder/attack_result.pt"
            attack_ok=1
            bench_attack_cmd "$attack" "$ratio" "$folder"
            problem=""
            if [[ ! -f $marker ]]; then
                missing_files=$(bench_attack_needs "$attack" | tr '\n' ' ')
                if [[ -d $RECORD_DIR/$folder ]]; then
                    problem="$RECORD_DIR/$folder exists without attack_result.pt (interrupted?); move it away to rerun"
                elif [[ -n $missing_files ]]; then
                    problem="needs ${missing_files}(see the readme files under BackdoorBench's resource/)"
                fi
            fi
            if [[ -n $problem && $DRY_RUN -eq 0 ]]; then
                bench_blocked "$folder (attack)" "$problem"
                attack_ok=0
            else
                [[ -n $problem ]] && echo "# warning: $problem"
                bench_run "$marker" "$(bench_log_path "$folder" attack)" "$folder (attack)" || attack_ok=0
            fi
            for entry in "${RUN_DEFENSES[@]}"; do
                name=${entry%%=*}
                if [[ $attack_ok -eq 0 ]]; then
                    bench_blocked "$folder/defense/$name" "no attack result"
                    continue
                fi
                bench_defense_cmd "$name" "$folder"
                bench_run "$RECORD_DIR/$folder/defense/$name/defense_result.pt" \
                    "$(bench_log_path "$folder" "$name")" "$folder/defense/$name" || true
            done
        done
    done
}

bench_report() {
    local attack ratio folder label specs=()
    for ratio in "${PRATIOS[@]}"; do
        for attack in "${ATTACKS[@]}"; do
            folder=$(bench_attack_folder "$attack" "$ratio")
            label=$(attack_label "$attack")
            [[ ${#PRATIOS[@]} -gt 1 ]] && label+=" $(ratio_percent "$ratio")%"
            specs+=("$folder=$label")
        done
    done
    local report_file="$REPORT_DIR/$TABLE.$REPORT_FORMAT"
    CMD=("$PYTHON" -m sau_plugin report --record_dir "$RECORD_DIR" --attacks "${specs[@]}"
         --defenses "${DEFENSES[@]}" --format "$REPORT_FORMAT" --caption "$CAPTION" --output "$report_file"
         --leaderboard "$LEADERBOARD" --leaderboard_extras "$LEADERBOARD_EXTRAS" "${REPORT_EXTRA[@]}")
    if [[ $DRY_RUN -eq 1 ]]; then
        bench_quote "${CMD[@]}"
        echo
        return 0
    fi
    mkdir -p "$REPORT_DIR"
    echo "[report] $(bench_quote "${CMD[@]}")"
    "${CMD[@]}" && cat "$report_file"
}

bench_main() {
    [[ -n ${TABLE:-} && ${#ATTACKS[@]} -gt 0 && ${#PRATIOS[@]} -gt 0 ]] || bench_die "table script misconfigured"
    bench_parse_args "$@"
    bench_select RUN_ATTACKS attacks "${SEL_ATTACKS[@]}" -- "${ATTACKS[@]}"
    bench_select RUN_DEFENSES defenses "${SEL_DEFENSES[@]}" -- "${DEFENSES[@]}"
    bench_select RUN_PRATIOS ratios "${SEL_PRATIOS[@]}" -- "${PRATIOS[@]}"
    local problems
    problems=$(bench_check_root)
    if [[ -n $problems ]]; then
        if [[ $DRY_RUN -eq 1 ]]; then
            while IFS= read -r line; do echo "# warning: $line"; done <<<"$problems"
        else
            bench_die "$(head -n 1 <<<"$problems")"
        fi
    fi
    [[ $DRY_RUN -eq 1 ]] && echo "# $TABLE: $CAPTION"
    bench_grid
    if [[ $DRY_RUN -eq 1 ]]; then
        echo "# $N_TOTAL runs (${#RUN_ATTACKS[@]} attacks x ${#RUN_PRATIOS[@]} ratios x" \
             "(no defense + ${#RUN_DEFENSES[@]} defenses)): $N_TODO to run, $N_DONE done"
    else
        echo "$N_TOTAL runs: $((N_TOTAL - N_DONE - N_FAILED)) run now, $N_DONE already done, $N_FAILED failed or blocked"
    fi
    local rc=0
    if [[ $RUN_REPORT -eq 1 ]]; then
        bench_report || rc=1
    fi
    if [[ $N_FAILED -gt 0 ]]; then
        printf '  failed: %s\n' "${FAILED_RUNS[@]}" >&2
        rc=1
    fi
    return "$rc"
}
