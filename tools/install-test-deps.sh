#!/usr/bin/env bash
# Install what the test runs need on a fresh Debian 12 or Ubuntu 24.04 machine, as root:
#   - Debian/Ubuntu packages: the PostgreSQL server (15 on Debian 12, 16 on Ubuntu 24.04), git,
#     Apache, strace and iproute2 (the network-namespace tests), python3-venv and a compiler for
#     Label Studio's uWSGI, python3-apt and the charm plugin's build packages (tox -e pack runs
#     charmcraft in destructive mode, which would otherwise apt-get them mid-build), and the
#     packages the rocks stage (tests/packing reads their file lists);
#   - tox, pinned, in its own venv (/opt/tox-venv; the distro Python is PEP 668-managed);
#   - Pebble built from its pinned Go module, with a Go new enough for it;
#   - the system user _daemon_, the rocks' run-user, that the registry's services run as;
#   - Label Studio's own venv (it cannot share one with DVC).
# tox -e pack installs charmcraft itself, pinned in requirements/pack.txt, in its tox env: tox
# rebuilds that env when the pin changes, and nothing global is left behind. It needs a
# Python 3.12 (Ubuntu 24.04's python3; elsewhere pyenv's): this script says whether there is one.
#
# Every step fails loudly. Safe to run again: each step checks first and does only what is
# missing, so a second run takes seconds.
set -euo pipefail

PEBBLE_VERSION=v1.26.0
GO_VERSION=1.24.6 # pebble v1.26.0's go.mod needs it
# SHA-256 of the Go proxy's golang.org/toolchain@v0.0.1-go1.24.6.linux-amd64.zip (for a machine
# whose Go, if any, is too old to fetch and verify a toolchain itself: Debian 12's is 1.19).
GO_TOOLCHAIN_SHA256=e7f0fd16d1b06c716162a0938744bb7ebf7edbc3248d42432271a1b5c1fde1ce
TOX_VERSION=4.32.0
TOX_VENV=/opt/tox-venv
LABEL_STUDIO_VENV=${LABEL_STUDIO_VENV:-/opt/venv-labelling}
RUN_USER=_daemon_

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

step() { echo "==> $*"; }
fail() { echo "error: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || fail "run as root: sudo $0"
# shellcheck source=/dev/null
. /etc/os-release
case "${ID}:${VERSION_ID:-}" in
    debian:12 | ubuntu:24.04) ;;
    *) echo "warning: written for Debian 12 and Ubuntu 24.04, this is ${PRETTY_NAME:-unknown}" >&2 ;;
esac

# --- distro packages ---------------------------------------------------------------------------
python_minor=$(/usr/bin/python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
packages=(
    postgresql git ca-certificates curl apache2 apache2-utils strace iproute2
    build-essential python3-venv python3-dev
    libssl-dev # uWSGI (in the Label Studio venv) is built with OpenSSL: its --https serves TLS
    python3-apt python3-pip python3-setuptools python3-wheel libffi-dev libyaml-dev
    "libpython${python_minor}" passwd util-linux mount
)
missing=()
for package in "${packages[@]}"; do
    status=$(dpkg-query -W -f '${db:Status-Status}' "$package" 2>/dev/null || true)
    [ "$status" = installed ] || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
    step "Installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
else
    step "Distro packages are installed"
fi
pg_bindir=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d | sort -V | tail -n 1)
[ -x "$pg_bindir/initdb" ] || fail "no PostgreSQL server under /usr/lib/postgresql after installing postgresql"
echo "    PostgreSQL server: $pg_bindir"

# --- tox ---------------------------------------------------------------------------------------
if [ "$("$TOX_VENV/bin/tox" --version 2>/dev/null | cut -d' ' -f1)" != "$TOX_VERSION" ]; then
    step "Installing tox $TOX_VERSION in $TOX_VENV"
    rm -rf "$TOX_VENV"
    /usr/bin/python3 -m venv "$TOX_VENV"
    "$TOX_VENV/bin/pip" install -q --disable-pip-version-check "tox==${TOX_VERSION}"
fi
ln -sfn "$TOX_VENV/bin/tox" /usr/local/bin/tox
on_path=$(command -v tox || true)
step "tox $TOX_VERSION: /usr/local/bin/tox${on_path:+ (tox on this PATH: $on_path)}"

# --- Go and Pebble -----------------------------------------------------------------------------
version_at_least() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n 1)" = "$2" ]; }
go_version_of() { "$1" env GOVERSION 2>/dev/null | sed 's/^go//'; }

current_pebble=$(pebble version --client 2>/dev/null || true)
if [ "$current_pebble" != "$PEBBLE_VERSION" ]; then
    go=$(command -v go || true)
    go_env=()
    have=${go:+$(go_version_of "$go")}
    if [ -n "$have" ] && version_at_least "$have" "$GO_VERSION"; then
        echo "    using this machine's Go $have"
    elif [ -n "$have" ] && version_at_least "$have" 1.21; then
        # Go 1.21+ fetches the toolchain from the Go proxy itself and checks it against sumdb.
        echo "    Go $have is older than $GO_VERSION: GOTOOLCHAIN=go${GO_VERSION}+auto"
        go_env=(GOTOOLCHAIN="go${GO_VERSION}+auto")
    else
        arch=$(dpkg --print-architecture)
        [ "$arch" = amd64 ] || fail "no Go >= 1.21 here and no pinned Go toolchain for $arch"
        toolchain=/usr/local/lib/go-toolchains/go${GO_VERSION}
        if [ ! -x "$toolchain/bin/go" ]; then
            step "Fetching Go $GO_VERSION from the Go proxy (this machine has ${have:-no Go})"
            download=$(mktemp -d)
            module="golang.org/toolchain@v0.0.1-go${GO_VERSION}.linux-${arch}"
            curl -fsSL -o "$download/go.zip" \
                "https://proxy.golang.org/golang.org/toolchain/@v/v0.0.1-go${GO_VERSION}.linux-${arch}.zip"
            echo "$GO_TOOLCHAIN_SHA256  $download/go.zip" | sha256sum --check --quiet
            /usr/bin/python3 -m zipfile -e "$download/go.zip" "$download/unpacked"
            # A module zip keeps no file modes: the toolchain's programs need theirs back.
            chmod -R a+x "$download/unpacked/$module/bin" "$download/unpacked/$module/pkg/tool"
            mkdir -p "$(dirname "$toolchain")"
            rm -rf "$toolchain"
            mv "$download/unpacked/$module" "$toolchain"
            rm -rf "$download"
        fi
        go=$toolchain/bin/go
        echo "    using Go $(go_version_of "$go") from $toolchain"
    fi
    step "Building Pebble $PEBBLE_VERSION (was: ${current_pebble:-not installed})"
    # `go install pebble@tag` needs the module's version list, which the proxy here refuses;
    # building the tagged module from a throw-away module needs only that tag.
    build_dir=$(mktemp -d)
    (
        cd "$build_dir"
        env "${go_env[@]}" "$go" mod init pebble-build
        env "${go_env[@]}" "$go" get "github.com/canonical/pebble/cmd/pebble@${PEBBLE_VERSION}"
        env "${go_env[@]}" "$go" build -o /usr/local/bin/pebble.new github.com/canonical/pebble/cmd/pebble
    )
    rm -rf "$build_dir"
    mv /usr/local/bin/pebble.new /usr/local/bin/pebble
fi
[ "$(/usr/local/bin/pebble version --client)" = "$PEBBLE_VERSION" ] ||
    fail "/usr/local/bin/pebble is not $PEBBLE_VERSION"
step "Pebble $PEBBLE_VERSION: /usr/local/bin/pebble"

# --- the rocks' run-user -----------------------------------------------------------------------
if ! id -u "$RUN_USER" >/dev/null 2>&1; then
    step "Creating the system user $RUN_USER"
    useradd --system --no-create-home --shell /usr/sbin/nologin "$RUN_USER"
fi
step "User $RUN_USER: $(id "$RUN_USER")"

# --- Label Studio ------------------------------------------------------------------------------
# Label Studio cannot share a venv with DVC; the labelling tests run it from here. The marker
# (the pip pin, then the requirements) is written only after a complete install.
# pip first, Ubuntu 24.04's as in the rock's venv: it builds a wheel of each source-only package.
# Debian 12's pip 23.0 installs those (uWSGI among them) with the legacy setup.py instead, which
# records none of their programs, so tests/packing could not read what the rock's venv holds.
LABEL_STUDIO_PIP=pip==24.0
requirements="$repo_root/requirements/label-studio.txt"
marker="$LABEL_STUDIO_VENV/requirements.txt"
wanted=$(printf '# %s\n' "$LABEL_STUDIO_PIP"; cat "$requirements")
if [ "$wanted" != "$(cat "$marker" 2>/dev/null)" ] || [ ! -x "$LABEL_STUDIO_VENV/bin/label-studio" ]; then
    step "Installing Label Studio in $LABEL_STUDIO_VENV (about three minutes: uWSGI is compiled)"
    rm -rf "$LABEL_STUDIO_VENV"
    /usr/bin/python3 -m venv "$LABEL_STUDIO_VENV"
    "$LABEL_STUDIO_VENV/bin/pip" install -q --disable-pip-version-check "$LABEL_STUDIO_PIP"
    "$LABEL_STUDIO_VENV/bin/pip" install -q --disable-pip-version-check -r "$requirements"
    printf '%s\n' "$wanted" > "$marker"
fi
step "Label Studio: $LABEL_STUDIO_VENV"

# --- tox -e pack -------------------------------------------------------------------------------
# The same search tox -e pack makes (tools/pack_charms.py); a missing one is not an error here,
# as plain tox does not need it.
if python312=$(/usr/bin/python3 "$repo_root/tools/pack_charms.py" --which-python 2>&1); then
    step "Python 3.12 for tox -e pack: $python312"
else
    echo "note: tox -e pack will fail: $python312" >&2
fi
