#!/usr/bin/env bash
# Deploy the MLOps stack on this machine, from nothing: MicroK8s, Juju, the charms and the rocks.
#
#   tools/deploy.sh [--model NAME] [--overlay overlays/production.yaml ...]
#
# For a fresh Ubuntu (24.04 or 22.04, amd64) machine with snapd and sudo. Safe to run again:
# it installs only what is missing, reuses the controller and the model, skips pushing an image
# the registry already has (--rebuild-rocks forces it), repacks the charms and deploys the
# bundle again (Juju applies only the differences).
#
# With overlays/production.yaml, set S3_ACCESS_KEY and S3_SECRET_KEY (and S3_ENDPOINT unless the
# store is AWS) to hand s3-integrator its keys as a Juju secret.
set -euo pipefail

MICROK8S_CHANNEL=1.32-strict/stable
JUJU_CHANNEL=3.6/stable
CHARMCRAFT_CHANNEL=latest/stable # charmcraft 4: unified charmcraft.yaml, base ubuntu@24.04
ROCKCRAFT_CHANNEL=latest/stable
LXD_CHANNEL=5.21/stable
CONTROLLER=mlops-microk8s
REGISTRY=localhost:32000

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
model=mlops
rebuild_rocks=false
overlay_args=()

usage() {
    sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

while [ $# -gt 0 ]; do
    case "$1" in
        --model) model=${2:?--model needs a name}; shift 2 ;;
        --overlay)
            [ -f "${2:?--overlay needs a file}" ] || { echo "error: no overlay file $2" >&2; exit 2; }
            overlay_args+=(--overlay "$(cd "$(dirname "$2")" && pwd)/$(basename "$2")")
            shift 2 ;;
        --rebuild-rocks) rebuild_rocks=true; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "error: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

step() { echo; echo "==> $*"; }
info() { echo "    $*"; }

sudo_() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# Run a command with a supplementary group the user was just added to (this shell predates it).
with_group() {
    local group=$1; shift
    if [ "$(id -u)" -eq 0 ] || id -nG | tr ' ' '\n' | grep -qx "$group"; then
        "$@"
    else
        sg "$group" -c "$(printf '%q ' "$@")"
    fi
}

# What this script needs before it installs anything, said at once rather than midway.
for tool in snap curl; do
    command -v "$tool" >/dev/null || { echo "error: $tool is not installed" >&2; exit 1; }
done
# The strictly confined juju snap reads files under the user's home only: the bundle and the
# packed charms must be there.
case "$repo_root/" in
    "$HOME"/*) ;;
    *) echo "error: put the repository under $HOME (the juju snap cannot read $repo_root)" >&2
       exit 1 ;;
esac

snap_install() {
    local name=$1 channel=$2; shift 2
    if snap list "$name" >/dev/null 2>&1; then
        info "$name is installed ($(snap list "$name" | awk 'NR==2 {print $2}'))"
    else
        info "installing $name from $channel"
        sudo_ snap install "$name" --channel "$channel" "$@"
    fi
}

# --- preconditions ------------------------------------------------------------------------------
step "Checking the machine"
command -v snap >/dev/null || { echo "error: snapd is required (an Ubuntu machine)" >&2; exit 1; }
[ "$(dpkg --print-architecture)" = amd64 ] || { echo "error: the charms are built for amd64" >&2; exit 1; }
command -v python3 >/dev/null || { echo "error: python3 is required" >&2; exit 1; }
user=$(id -un)
info "user $user, model $model, controller $CONTROLLER"

# --- tools --------------------------------------------------------------------------------------
step "Installing MicroK8s, Juju, LXD, charmcraft and rockcraft where missing"
snap_install microk8s "$MICROK8S_CHANNEL"
snap_install juju "$JUJU_CHANNEL"
snap_install lxd "$LXD_CHANNEL"
snap_install charmcraft "$CHARMCRAFT_CHANNEL" --classic
snap_install rockcraft "$ROCKCRAFT_CHANNEL" --classic
if [ "$(id -u)" -ne 0 ]; then
    for group in snap_microk8s lxd; do
        id -nG "$user" | tr ' ' '\n' | grep -qx "$group" || sudo usermod -a -G "$group" "$user"
    done
fi
mkdir -p "$HOME/.local/share/juju" # the strictly confined juju snap does not create it
if ! sudo_ lxc storage show default >/dev/null 2>&1; then
    info "initialising LXD (charmcraft and rockcraft build in LXD containers)"
    sudo_ lxd init --auto
fi

# --- Kubernetes ---------------------------------------------------------------------------------
step "Starting MicroK8s with dns, hostpath-storage and registry"
sudo_ microk8s status --wait-ready >/dev/null
for addon in dns hostpath-storage registry; do
    if sudo_ microk8s status --addon "$addon" 2>/dev/null | grep -q enabled; then
        info "$addon is enabled"
    else
        info "enabling $addon"
        sudo_ microk8s enable "$addon"
    fi
done
sudo_ microk8s kubectl -n container-registry rollout status deployment/registry --timeout=300s

# --- Juju ---------------------------------------------------------------------------------------
step "Bootstrapping the Juju controller and the model"
if with_group snap_microk8s juju show-controller "$CONTROLLER" >/dev/null 2>&1; then
    info "controller $CONTROLLER exists"
else
    with_group snap_microk8s juju bootstrap microk8s "$CONTROLLER"
fi
juju switch "$CONTROLLER" >/dev/null
if juju show-model "$model" >/dev/null 2>&1; then
    info "model $model exists"
    juju switch "$CONTROLLER:$model" >/dev/null
else
    juju add-model "$model"
fi

# --- images -------------------------------------------------------------------------------------
step "Staging and packing the rocks, pushing them to the MicroK8s registry ($REGISTRY)"
# A rock build sees only its folder: tools/stage.py stages build/rocks/<rock>/ with the
# repository trees its parts use (workload/). It reads the recipes with PyYAML.
python3 -c 'import yaml' 2>/dev/null || sudo_ apt-get install -y python3-yaml
(cd "$repo_root" && python3 tools/stage.py rock --all)
for project in "$repo_root"/build/rocks/*/rockcraft.yaml; do
    rock_dir=$(dirname "$project")
    name=$(sed -n 's/^name: *\([^ #]*\).*/\1/p' "$project")
    version=$(sed -n 's/^version: *"\{0,1\}\([^" #]*\).*/\1/p' "$project")
    image="$REGISTRY/$name:$version"
    manifest_types="application/vnd.oci.image.manifest.v1+json"
    manifest_types+=",application/vnd.docker.distribution.manifest.v2+json"
    if ! $rebuild_rocks && curl -fsS -o /dev/null -H "Accept: $manifest_types" \
        "http://$REGISTRY/v2/$name/manifests/$version"; then
        info "$image is in the registry (--rebuild-rocks to replace it)"
        continue
    fi
    info "packing $name $version (the first build takes a while)"
    (cd "$rock_dir" && with_group lxd rockcraft pack)
    rock_file="$rock_dir/${name}_${version}_$(dpkg --print-architecture).rock"
    info "pushing $rock_file to $image"
    rockcraft.skopeo --insecure-policy copy --dest-tls-verify=false \
        "oci-archive:$rock_file" "docker://$image"
done

# --- charms -------------------------------------------------------------------------------------
step "Staging and packing the charms into build/"
(cd "$repo_root" && with_group lxd python3 tools/stage.py charm --all --pack)

# --- deploy -------------------------------------------------------------------------------------
step "Deploying bundle.yaml ${overlay_args[*]:+with ${overlay_args[*]}}"
(cd "$repo_root" && juju deploy ./bundle.yaml "${overlay_args[@]}")

if juju status --format json s3-integrator 2>/dev/null | grep -q '"s3-integrator"' &&
    [ -n "${S3_ACCESS_KEY:-}" ] && [ -n "${S3_SECRET_KEY:-}" ]; then
    step "Handing s3-integrator its keys as a Juju secret"
    if juju show-secret mlops-s3-credentials >/dev/null 2>&1; then
        info "secret mlops-s3-credentials exists: leaving it as it is"
    else
        keys_file=$(mktemp)
        trap 'rm -f "$keys_file"' EXIT
        chmod 600 "$keys_file"
        printf 'access-key: %s\nsecret-key: %s\n' "$S3_ACCESS_KEY" "$S3_SECRET_KEY" >"$keys_file"
        # From a file, so the keys never appear on a command line.
        secret_id=$(juju add-secret mlops-s3-credentials --file "$keys_file")
        rm -f "$keys_file"
        juju grant-secret mlops-s3-credentials s3-integrator
        juju config s3-integrator credentials="$secret_id"
    fi
    if [ -n "${S3_ENDPOINT:-}" ]; then
        juju config s3-integrator endpoint="$S3_ENDPOINT"
    fi
fi

step "Done. Watch the units settle with: juju status --watch 5s"
info "MLflow admin credentials: juju run tracking-k8s/leader get-admin-credentials"
