#!/usr/bin/env bash
# Data parallelism on one machine: the same global batch trained by one process on every core,
# and by NP ranks under mpirun (the cores shared among them), plain DP and ZeRO-1.
#
# Usage: bench/dp_vs_one.sh [CONFIG] [STEPS] [ROUNDS]
#   CONFIG   configs/cpu-speedrun.toml by default (needs the prepared corpus of `frugal speedrun`)
#   STEPS    30 optimizer steps per run; ROUNDS 2 (the three ways alternate, medians reported)
#   NP=2     ranks
#
# Prints per way: median step time, tokens/s at that median, optimizer state per rank, final loss; then the
# ranks' step time against one process's. Builds the release binary with the mpi feature.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
CONFIG=${1:-configs/cpu-speedrun.toml}
STEPS=${2:-30}
ROUNDS=${3:-2}
NP=${NP:-2}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
cargo build --release -q -p frugal-cli --features mpi
BIN=target/release/frugal
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

batch=$(sed -n 's/^batch_size *= *\([0-9]*\).*/\1/p' "$CONFIG" | head -1)
seq=$(sed -n 's/^seq_len *= *\([0-9]*\).*/\1/p' "$CONFIG" | head -1)
(( batch % NP == 0 )) || { echo "batch_size $batch is not a multiple of NP=$NP" >&2; exit 2; }
global=$(( batch * seq ))
common=(--config "$CONFIG" --set "train.steps=$STEPS" --set "train.batch_tokens=$global"
        --set train.warmup_steps=5 --set train.eval_every=0 --set train.eval_tokens=4096 --set train.sample_every=0
        --set train.sample_tokens=8 --set "train.checkpoint_every=$STEPS")

# way -> "step_ms opt_mib loss" per round
run() {
    local way=$1 round=$2 log="$OUT/$1-$2.log"
    case $way in
        one)   "$BIN" pretrain "${common[@]}" --run "$OUT/run-$way-$round" >"$log" 2>&1 ;;
        dp)    mpirun -np "$NP" --bind-to none "$BIN" pretrain "${common[@]}" --run "$OUT/run-$way-$round" \
                   --set "train.batch_size=$(( batch / NP ))" >"$log" 2>&1 ;;
        zero1) mpirun -np "$NP" --bind-to none "$BIN" pretrain "${common[@]}" --run "$OUT/run-$way-$round" \
                   --set "train.batch_size=$(( batch / NP ))" --set dist.zero=1 >"$log" 2>&1 ;;
    esac || { cat "$log"; exit 1; }
    # Median step time over the steps after the first two (warm-up).
    local ms
    ms=$(grep -o ' | [0-9.]* ms | ' "$log" | awk 'NR>2{print $2}' | sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}')
    local mib loss
    mib=$(sed -n 's/^optimizer state \([0-9.]*\) MiB per rank.*/\1/p' "$log")
    loss=$(sed -n 's/^summary .*final loss \([0-9.]*\).*/\1/p' "$log")
    echo "$way $ms $mib $loss" >>"$OUT/results"
}

for r in $(seq 1 "$ROUNDS"); do
    for way in one dp zero1; do run "$way" "$r"; done
done

median() { sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
printf '\n%-8s %12s %10s %22s %11s\n' way "step ms" "tok/s" "optimizer MiB/rank" "final loss"
for way in one dp zero1; do
    ms=$(awk -v w=$way '$1==w{print $2}' "$OUT/results" | median)
    tps=$(awk -v ms="$ms" -v t="$global" 'BEGIN{printf "%.0f", t/(ms/1000)}')
    mib=$(awk -v w=$way '$1==w{print $3}' "$OUT/results" | head -1)
    loss=$(awk -v w=$way '$1==w{print $4}' "$OUT/results" | head -1)
    printf '%-8s %12s %10s %22s %11s\n' "$way" "$ms" "$tps" "$mib" "$loss"
    eval "ms_$way=$ms"
done
awk -v a="$ms_one" -v b="$ms_dp" -v c="$ms_zero1" -v np="$NP" 'BEGIN{
    printf "\n%d ranks vs 1 process, same global batch: plain DP %.2fx, ZeRO-1 %.2fx the step time of one process\n", np, b/a, c/a }'
