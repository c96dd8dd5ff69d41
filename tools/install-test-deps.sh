#!/usr/bin/env bash
# Install everything the default test run (`tox`) needs on a fresh Debian 12 machine, as root:
# Debian packages (PostgreSQL server, git, Apache for the registry's git server, a compiler for
# uWSGI), tox, Pebble built from its pinned Go module, and Label Studio's own venv.
set -euo pipefail

PEBBLE_VERSION=v1.26.0
TOX_VERSION=4.32.0

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
    postgresql-15 git ca-certificates apache2 apache2-utils build-essential >/dev/null

python3 -m pip install -q "tox==${TOX_VERSION}"

if ! command -v pebble >/dev/null || [ "$(pebble version --client

# Label Studio cannot share a venv with DVC; the labelling tests run it from here.
LABEL_STUDIO_VENV=${LABEL_STUDIO_VENV:-/opt/venv-labelling}
requirements="$(dirname "$0")/../requirements/label-studio.txt"
if ! cmp -s "$requirements" "$LABEL_STUDIO_VENV/requirements.txt"; then
    python3 -m venv "$LABEL_STUDIO_VENV"
    "$LABEL_STUDIO_VENV/bin/pip" install -q -r "$requirements"
    cp "$requirements" "$LABEL_STUDIO_VENV/requirements.txt"
fi 2>/dev/null)" != "${PEBBLE_VERSION}" ]; then
    # `go install pebble@tag` needs the module's version list, which the proxy here refuses;
    # building the tagged module from a throw-away module needs only that tag.
    build_dir=$(mktemp -d)
    (
        cd "$build_dir"
        go mod init pebble-build >/dev/null 2>&1
        go get "github.com/canonical/pebble/cmd/pebble@${PEBBLE_VERSION}" >/dev/null 2>&1
        go build -o /usr/local/bin/pebble github.com/canonical/pebble/cmd/pebble
    )
    rm -rf "$build_dir"
fi
pebble version --client

# Label Studio cannot share a venv with DVC; the labelling tests run it from here.
LABEL_STUDIO_VENV=${LABEL_STUDIO_VENV:-/opt/venv-labelling}
requirements="$(dirname "$0")/../requirements/label-studio.txt"
if ! cmp -s "$requirements" "$LABEL_STUDIO_VENV/requirements.txt"; then
    python3 -m venv "$LABEL_STUDIO_VENV"
    "$LABEL_STUDIO_VENV/bin/pip" install -q -r "$requirements"
    cp "$requirements" "$LABEL_STUDIO_VENV/requirements.txt"
fi
