#!/usr/bin/env bash
# curves.sh: the loss curve of each optimizer memory mode (f32 AdamW, 8-bit AdamW, paged AdamW,
# dynamic loss scaling) on the demo model (the tiny synthetic Llama, facts data, as scripts/demo
# trains it) and on stories260K (a real pretrained model; TinyStories-like data), QLoRA, on each
# device: the CPU, WebGPU and Vulkan (lavapipe where no GPU is present: correctness, not speed).
#
#   bench/curves.sh [STEPS] [WORKDIR]      # STEPS defaults to 30
#
# Prints a markdown table: the loss at five steps of each run, and the final loss over the f32
# AdamW run's on the same model and device. Needs LATHE_TESTDATA (holding stories260K/).
set -euo pipefail
steps=${1:-30} work=${2:-$(mktemp -d)}
root=$(cd "$(dirname "$0")/.." && pwd)
: "${LATHE_TESTDATA:?set LATHE_TESTDATA to the folder holding stories260K/}"
mkdir -p "$work"
go build -o "$work/lathe" "$root/cmd/lathe"
l="$work/lathe"
[ -f "$work/demo/config.json" ] || "$l" init-model --out "$work/demo" --preset tiny --seed 1 >/dev/null
[ -f "$work/facts.jsonl" ] || "$l" init-data --out "$work/facts.jsonl" --kind facts --n 300 >/dev/null
[ -f "$work/stories260K/config.json" ] || "$l" convert --from llama2c "$LATHE_TESTDATA/stories260K/stories260K.bin" \
	"$LATHE_TESTDATA/stories260K/tok512.bin" "$work/stories260K" >/dev/null
[ -f "$work/stories.jsonl" ] || "$l" init-data --out "$work/stories.jsonl" --kind stories --n 300 >/dev/null
marks=(1 $((steps / 4)) $((steps / 2)) $((3 * steps / 4)) "$steps")
echo "| model | device | mode | loss at step ${marks[*]} | final ÷ f32 AdamW's |"
echo "| --- | --- | --- | --- | --- |"
for m in demo:facts stories260K:stories; do
	model=${m%%:*} data=${m##*:}
	for dev in cpu webgpu vulkan; do
		base=""
		for mode in adamw adamw8bit paged loss-scale; do
			args=(--optim adamw)
			case $mode in
			adamw8bit) args=(--optim adamw8bit) ;;
			paged) args=(--optim adamw --paged-optim) ;;
			loss-scale) args=(--optim adamw --loss-scale 65536) ;;
			esac
			out="$work/run-$model-$dev-$mode"
			rm -rf "$out"
			"$l" train --model "$work/$model" --data "$work/$data.jsonl" --method qlora --out "$out" --steps "$steps" \
				--batch 4 --seq 48 --lr 1e-2 --warmup 3 --dropout 0 --eval-fraction 0 --device "$dev" "${args[@]}" --quiet >/dev/null
			losses=$(awk -F'"loss":' '/"lr"/ { split($2, a, ","); print a[1] }' "$out/metrics.jsonl")
			row="" final=""
			for s in "${marks[@]}"; do
				v=$(echo "$losses" | sed -n "${s}p")
				row="$row $(printf '%.4f' "$v")"
				final=$v
			done
			[ -z "$base" ] && base=$final
			echo "| $model | $dev | $mode |$row | $(awk -v f="$final" -v b="$base" 'BEGIN { printf "%.4f", f / b }') |"
		done
	done
done
