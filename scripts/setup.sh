# Shared set-up for scripts/test and scripts/demo (sourced, not run).

# lathe_setup_go checks for the Go toolchain lathe needs (go.mod's version) and says how to get it.
lathe_setup_go() {
	if ! command -v go >/dev/null 2>&1; then
		if [ -x /usr/local/go/bin/go ]; then
			export PATH="/usr/local/go/bin:$PATH"
		else
			echo "lathe needs Go $(sed -n 's/^go //p' go.mod) or newer: install it from https://go.dev/dl/ and put it on PATH" >&2
			exit 1
		fi
	fi
	# wgpu probes OpenGL too, which complains on headless machines without a runtime dir.
	if [ -z "${XDG_RUNTIME_DIR:-}" ]; then
		export XDG_RUNTIME_DIR="$(mktemp -d)"
	fi
	# A newer toolchain named by go.mod is fetched through the module proxy.
	export GOTOOLCHAIN="${GOTOOLCHAIN:-auto}"
}

# lathe_apt_install installs Debian packages that are missing (as root, or through sudo).
lathe_apt_install() {
	local missing=()
	for p in "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	local sudo=""
	[ "$(id -u)" -eq 0 ] || sudo="sudo"
	echo "== installing ${missing[*]}"
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}
