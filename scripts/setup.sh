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

# lathe_setup_studio installs what `lathe studio` (package studio, GLFW 3.3 built from source by
# cgo for X11) needs to build: a C compiler and the X11 and GL headers GLFW includes and links
# (Debian's xorg-dev, less its fonts and tools); and Xvfb, the virtual display its tests open when
# DISPLAY is unset.
lathe_setup_studio() {
	command -v apt-get >/dev/null 2>&1 || return 0
	lathe_apt_install gcc libc6-dev libx11-dev libxrandr-dev libxinerama-dev libxcursor-dev libxi-dev libxxf86vm-dev libgl-dev xvfb
}

# lathe_setup_node makes node and npm available for the tests that run npm packages (the official
# openai client against lathe serve, the tokenizer goldens' files): Debian's nodejs and npm when
# missing, and, when that node is older than the openai package asks (22), Node 22 itself from the
# npm registry (the node-linux-* packages hold the official binaries) into .cache/node, first on PATH.
lathe_setup_node() {
	if command -v apt-get >/dev/null 2>&1 && { ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; }; then
		lathe_apt_install nodejs npm
	fi
	command -v npm >/dev/null 2>&1 || return 0
	local major
	major="$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)"
	[ "$major" -ge 22 ] && return 0
	local arch
	case "$(uname -m)" in
	x86_64) arch=x64 ;;
	aarch64) arch=arm64 ;;
	*) return 0 ;;
	esac
	local dir="$PWD/.cache/node"
	if [ ! -x "$dir/bin/node" ]; then
		echo "== fetching Node 22 (node-linux-$arch from the npm registry; this node is $(node --version 2>/dev/null))"
		local tmp
		tmp="$(mktemp -d)"
		(cd "$tmp" && npm pack --silent "node-linux-$arch@22.23.5" >/dev/null)
		tar -xzf "$tmp"/*.tgz -C "$tmp"
		rm -rf "$dir"
		mkdir -p "$(dirname "$dir")"
		mv "$tmp/package" "$dir"
		rm -rf "$tmp"
	fi
	export PATH="$dir/bin:$PATH"
}
