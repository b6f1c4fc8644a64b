#!/usr/bin/env bash
# peakmem.sh: peak resident memory of `lathe generate --quantize nf4` and of one `lathe train
# --method qlora` step on a synthetic checkpoint with a real model's shapes, against the weights
# lathe keeps plus the step's planned buffers (issue 15's ratio; target ≤ 1.3).
#
#   bench/peakmem.sh 1b f16 [WORKDIR]     # Llama 3.2 1B shapes, f16: 2.5 GB on disk
#   bench/peakmem.sh 8b bf16 [WORKDIR]    # Llama 3.1 8B shapes, bf16: 16 GB on disk (deleted after)
#
# Needs /usr/bin/time (Debian: apt-get install time). Each line printed is one measurement; the last
# is a JSON object with the figures.
set -euo pipefail
shape=${1:-1b} dtype=${2:-f16} work=${3:-$(mktemp -d)}
root=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$work"
go build -o "$work/lathe" "$root/cmd/lathe"
ck="$work/llama-$shape-$dtype"
[ -f "$ck/config.json" ] || go run "$root/bench/synthckpt" --shape "$shape" --dtype "$dtype" --out "$ck" >/dev/null
"$work/lathe" init-data --out "$work/stories.jsonl" --kind stories --n 50 >/dev/null
rss() { awk '/Maximum resident/ {printf "%.0f\n", $6 * 1024}' "$1"; }
/usr/bin/time -v "$work/lathe" generate --model "$ck" --quantize nf4 --device cpu --prompt "Once upon a time" \
	--max-tokens 4 --json >"$work/gen.out" 2>"$work/gen.time"
batch=4 seq=128
[ "$shape" = 8b ] && batch=1 seq=32
rm -rf "$work/adapter"
/usr/bin/time -v "$work/lathe" train --model "$ck" --data "$work/stories.jsonl" --method qlora --out "$work/adapter" \
	--steps 1 --batch $batch --seq $seq --device cpu --eval-fraction 0 >"$work/train.out" 2>"$work/train.time"
res=$(tail -n 1 "$work/train.out")
weights=$(echo "$res" | sed 's/.*"weight_bytes":\([0-9]*\).*/\1/')
planned=$(echo "$res" | sed 's/.*"peak_bytes":\([0-9]*\).*/\1/')
gen=$(rss "$work/gen.time") train=$(rss "$work/train.time")
echo "generate --quantize nf4: peak RSS $gen bytes"
echo "train --method qlora (batch $batch, seq $seq): peak RSS $train bytes; weights $weights + planned $planned"
awk -v g="$gen" -v t="$train" -v w="$weights" -v p="$planned" -v s="$shape" -v d="$dtype" 'BEGIN {
	printf "{\"shape\":\"%s\",\"dtype\":\"%s\",\"generate_peak_rss\":%.0f,\"train_peak_rss\":%.0f,\"weight_bytes\":%.0f,\"planned_bytes\":%.0f,\"train_ratio\":%.3f}\n", s, d, g, t, w, p, t / (w + p) }'
[ "$shape" = 8b ] && rm -rf "$ck"
exit 0
