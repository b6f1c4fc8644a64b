#!/usr/bin/env bash
# device.sh: lathe's GPU checks in one command, for a machine with a GPU but no Go and no network.
#
# It runs the WebGPU and Vulkan conformance suites (engine/webgpu, engine/vulkan: every op against
# the CPU backend; on Vulkan the coopmat path where the device has one), the model
# test that compares whole-decoder logits on WebGPU with the CPU's, and
# `lathe bench --reference`, leaving everything in one folder. Each step has its own time limit so
# that the whole run ends inside 10 minutes (about 9 at the very worst; a few minutes normally).
#
# 1. Build here, on a machine with Go, from the repository root:
#
#        bench/device.sh --build            # writes bin/device/
#
#    which does (by hand, if you prefer):
#
#        mkdir -p bin/device
#        go build -trimpath -ldflags='-s -w' -o bin/device/lathe ./cmd/lathe
#        go test -c -trimpath -ldflags='-s -w' -o bin/device/webgpu.test ./engine/webgpu
#        go test -c -trimpath -ldflags='-s -w' -o bin/device/vulkan.test ./engine/vulkan
#        go test -c -trimpath -ldflags='-s -w' -o bin/device/model.test ./model
#        gzip -9 bin/device/lathe bin/device/*.test    # ~23 MB together instead of ~58
#        git rev-parse HEAD > bin/device/COMMIT
#        cp -L /usr/lib/x86_64-linux-gnu/libvulkan.so.1 bin/device/   # the Vulkan loader (libvulkan1)
#
#    wgpu-native is linked into the binaries; it loads the Vulkan loader (libvulkan.so.1) at run
#    time, which loads the GPU's driver (the ICD) named by a JSON manifest.
#
# 2. Carry the repository with bin/device (it is git-ignored: name it in the transfer, e.g. the
#    device tool's carry: ["bin/device"]) and run, from the repository root on the GPU machine:
#
#        bench/device.sh [OUT_DIR] [BIN_DIR]       # defaults: $OUT or ./device-out, bin/device
#
#    Environment: BENCH_BACKEND (webgpu; vulkan; "all" adds the other GPU backend and the CPU
#    backend at full size, minutes more),
#    BENCH_FLAGS (extra flags, e.g. --quick), LATHE_PYTHON (the Python with torch for the reference).
#
# Vulkan on the GPU machine: if `ldconfig -p | grep libvulkan.so.1` finds nothing, the carried
# loader is used (LD_LIBRARY_PATH). The NVIDIA driver's manifest is looked for where container
# runtimes and packages put it (/usr/local/nvidia/share/vulkan/icd.d, /usr/share/vulkan/icd.d,
# /etc/vulkan/icd.d); if there is none but the driver's libGLX_nvidia.so.0 is present (it holds
# NVIDIA's Vulkan driver), a manifest is written for it. Set VK_ICD_FILENAMES (or VK_DRIVER_FILES)
# yourself to override. Without any GPU driver, wgpu may still find lavapipe (if installed): the
# report then says "tiny shapes".
#
# Output folder (at most 8 files, so that a transfer that returns 8 files gets them all):
# conformance.txt, bench.log, bench.json, bench.md, roofline-*.png, throughput-*.png.
set -u

build() {
	local dir=${1:-bin/device}
	set -e
	mkdir -p "$dir"
	go build -trimpath -ldflags='-s -w' -o "$dir/lathe" ./cmd/lathe
	go test -c -trimpath -ldflags='-s -w' -o "$dir/webgpu.test" ./engine/webgpu
	go test -c -trimpath -ldflags='-s -w' -o "$dir/vulkan.test" ./engine/vulkan
	go test -c -trimpath -ldflags='-s -w' -o "$dir/model.test" ./model
	rm -f "$dir"/*.gz
	gzip -9 "$dir/lathe" "$dir/webgpu.test" "$dir/vulkan.test" "$dir/model.test"
	git rev-parse HEAD >"$dir/COMMIT" 2>/dev/null || true
	local loader
	loader=$(ldconfig -p 2>/dev/null | awk '/libvulkan\.so\.1 .*x86-64/ {print $NF; exit}')
	[ -n "$loader" ] && cp -L "$loader" "$dir/libvulkan.so.1"
	du -ch "$dir"/* | tail -1
	echo "built $dir; carry it and run: bench/device.sh OUT_DIR $dir"
}

if [ "${1:-}" = "--build" ]; then
	build "${2:-bin/device}"
	exit $?
fi

OUTDIR=${1:-${OUT:-device-out}}
BIN=${2:-bin/device}
ROOT=$(pwd)
mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
LOG="$OUTDIR/conformance.txt"
T0=$(date +%s)
say() { echo "[device.sh +$(($(date +%s) - T0))s] $*" | tee -a "$LOG"; }

# Unpack the binaries (gzipped or not) into a scratch folder.
RUN=$(mktemp -d /tmp/lathe-device.XXXXXX)
for f in lathe webgpu.test vulkan.test model.test; do
	if [ -f "$BIN/$f.gz" ]; then
		gunzip -c "$BIN/$f.gz" >"$RUN/$f"
	elif [ -f "$BIN/$f" ]; then
		cp "$BIN/$f" "$RUN/$f"
	else
		say "missing $BIN/$f(.gz): build with bench/device.sh --build"
		exit 1
	fi
	chmod +x "$RUN/$f"
done
[ -f "$BIN/COMMIT" ] && export LATHE_GIT_COMMIT=$(cat "$BIN/COMMIT")

# Vulkan loader and NVIDIA manifest.
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp}
if ! ldconfig -p 2>/dev/null | grep -q 'libvulkan\.so\.1'; then
	if [ -f "$BIN/libvulkan.so.1" ]; then
		export LD_LIBRARY_PATH="$(cd "$BIN" && pwd)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
		say "no system Vulkan loader: using the carried $BIN/libvulkan.so.1"
	else
		say "warning: no Vulkan loader (libvulkan.so.1) here or in $BIN"
	fi
fi
if [ -z "${VK_ICD_FILENAMES:-}" ] && [ -z "${VK_DRIVER_FILES:-}" ]; then
	for j in /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json /usr/share/vulkan/icd.d/nvidia_icd.json \
		/etc/vulkan/icd.d/nvidia_icd.json /usr/share/vulkan/icd.d/nvidia_icd.x86_64.json; do
		if [ -f "$j" ]; then
			export VK_ICD_FILENAMES="$j"
			break
		fi
	done
	if [ -z "${VK_ICD_FILENAMES:-}" ]; then
		glx=$(ldconfig -p 2>/dev/null | awk '/libGLX_nvidia\.so\.0/ {print $NF; exit}')
		[ -z "$glx" ] && glx=$(find /usr/local/nvidia /usr/lib /usr/lib64 -name 'libGLX_nvidia.so.0' 2>/dev/null | head -1)
		if [ -n "$glx" ]; then
			printf '{"file_format_version":"1.0.0","ICD":{"library_path":"%s","api_version":"1.3.0"}}\n' "$glx" >"$RUN/nvidia_icd.json"
			export VK_ICD_FILENAMES="$RUN/nvidia_icd.json"
			say "wrote a Vulkan manifest for $glx"
		fi
	fi
fi
say "VK_ICD_FILENAMES=${VK_ICD_FILENAMES:-} VK_DRIVER_FILES=${VK_DRIVER_FILES:-} LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >>"$LOG" 2>&1

say "devices"
timeout 60 "$RUN/lathe" devices >>"$LOG" 2>&1
status=0

# The test binaries run in their package folders, as `go test` would (test data paths).
say "conformance: engine/webgpu (every op against the CPU backend)"
(cd "$ROOT/engine/webgpu" && LATHE_REQUIRE_GPU=1 timeout 150 "$RUN/webgpu.test" -test.v -test.count=1 -test.timeout=140s) >>"$LOG" 2>&1
rc=$?
say "engine/webgpu tests: exit $rc"
[ $rc -ne 0 ] && status=1
say "conformance: engine/vulkan (the same plans and kernels through Vulkan, SPIR-V from naga)"
(cd "$ROOT/engine/vulkan" && LATHE_REQUIRE_GPU=1 timeout 120 "$RUN/vulkan.test" -test.v -test.count=1 -test.run 'Conformance|NoLoader' -test.timeout=110s) >>"$LOG" 2>&1
rc=$?
say "engine/vulkan tests: exit $rc"
[ $rc -ne 0 ] && status=1
say "model: decoder logits on WebGPU equal the CPU's"
(cd "$ROOT/model" && LATHE_REQUIRE_GPU=1 timeout 60 "$RUN/model.test" -test.v -test.count=1 -test.run 'WebGPU' -test.timeout=55s) >>"$LOG" 2>&1
rc=$?
say "model tests: exit $rc"
[ $rc -ne 0 ] && status=1

say "lathe bench --backend ${BENCH_BACKEND:-webgpu} --reference ${BENCH_FLAGS:-}"
# shellcheck disable=SC2086
# --budget stops the kernels early if a device is slower than expected, so that the end-to-end
# figures, the reference and the report still come within the outer timeout.
timeout 230 "$RUN/lathe" bench --backend "${BENCH_BACKEND:-webgpu}" --reference --budget 120s --out "$OUTDIR" ${BENCH_FLAGS:-} >"$OUTDIR/bench.log" 2>&1
rc=$?
say "bench: exit $rc"
[ $rc -ne 0 ] && status=1
grep -E '^\| (nf4_gemm|lora_fwd_fused) ' "$OUTDIR/bench.md" 2>/dev/null | head -12
rm -rf "$RUN"
say "done (status $status); reports in $OUTDIR"
exit $status
