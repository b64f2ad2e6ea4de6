#!/usr/bin/env bash
# Builds and runs the appliance's container image (Containerfile) with podman or docker.
#
#   scripts/image.sh stage   fill build/container/ (the Containerfile's local inputs) only
#   scripts/image.sh build   stage, then build the image (IMAGE, default recommendation-appliance)
#   scripts/image.sh run     run it: port IMAGE_PORT (8000) -> 8000, volume IMAGE_VOLUME
#                            (appliance-data) at /data, example keys unless given
#
# Environment:
#   CONTAINER_ENGINE     podman (default when installed) or docker
#   BASE_IMAGE           default python:3.11-slim-bookworm; when it can neither be found nor
#                        pulled, scripts/container-base-image.sh builds a stand-in from Debian
#   WITH_RERANKER=true   also the llamacpp extra and the SmolLM2 GGUF
#   TORCH_WHEELS         folder holding torch-2.13.0+cpu-*.whl (default /opt/wheels); without it
#                        the build downloads from the PyTorch CPU index
#   APPLIANCE_WHEEL_CACHE  the llama-cpp-python wheel of scripts/install.sh (~/.cache/appliance/wheels)
#   IMAGE_EXTRA_CA       PEM file of extra CA certificates the build stage trusts (default: the
#                        file named by PIP_CERT, if any: a TLS-intercepting proxy's CA)
#   IMAGE_ENGINE_OPTS, IMAGE_BUILD_OPTS, IMAGE_RUN_OPTS   extra flags (global, build, run)
#   APPLIANCE_AUTH__ADMIN_KEYS / APPLIANCE_AUTH__CLIENT_KEYS   passed to `run` (else examples)
set -euo pipefail
cd "$(dirname "$0")/.."

image="${IMAGE:-recommendation-appliance}"
torch_version="2.13.0+cpu"
default_base="python:3.11-slim-bookworm"
local_base="localhost/appliance-base:3.11-bookworm"

engine="${CONTAINER_ENGINE:-}"
if [ -z "$engine" ]; then
    if command -v podman >/dev/null; then engine=podman
    elif command -v docker >/dev/null; then engine=docker
    else echo "no container engine: apt-get install -y podman (or set CONTAINER_ENGINE)" >&2; exit 1
    fi
fi

# Flags this kind of host needs, found from the host rather than hard-coded:
# - crun refuses cgroup v1+v2 "hybrid" hosts; runc runs there.
# - without CAP_SYS_RESOURCE the engine's default rlimits (nofile/nproc 1048576) cannot be set.
engine_opts=(${IMAGE_ENGINE_OPTS:-})
limit_opts=()
build_runtime=()
if [ "$engine" = podman ]; then
    # The OCI image format has no HEALTHCHECK (podman would drop it): build in docker format.
    build_runtime=(--format docker)
    if [ -d /sys/fs/cgroup/unified ] && command -v runc >/dev/null \
        && [[ " ${engine_opts[*]} " != *" --runtime "* ]]; then
        engine_opts+=(--runtime runc)   # podman run takes it as a global flag,
        build_runtime+=(--runtime runc) # podman build as its own
    fi
    cap_eff=$((16#$(awk '/^CapEff/ {print $2}' /proc/self/status)))
    if (( (cap_eff >> 24 & 1) == 0 )); then
        nofile=$(ulimit -Hn); nproc=$(ulimit -Hu)
        [ "$nofile" = unlimited ] || (( nofile > 16384 )) && nofile=16384
        [ "$nproc" = unlimited ] || (( nproc > 16384 )) && nproc=16384
        limit_opts=(--ulimit "nofile=$nofile:$nofile" --ulimit "nproc=$nproc:$nproc")
    fi
fi
run_engine() { "$engine" "${engine_opts[@]}" "$@"; }

stage() {
    local dir=build/container wheels torch_wheels llama_cache ca
    rm -rf "$dir"
    mkdir -p "$dir/wheels"
    torch_wheels="${TORCH_WHEELS:-/opt/wheels}"
    for wheel in "$torch_wheels"/torch-"$torch_version"-*.whl; do
        [ -e "$wheel" ] && { cp -l "$wheel" "$dir/wheels/" 2>/dev/null || cp "$wheel" "$dir/wheels/"; }
    done
    if [ "${WITH_RERANKER:-false}" = true ]; then
        llama_cache="${APPLIANCE_WHEEL_CACHE:-$HOME/.cache/appliance/wheels}"
        local version
        version="$(sed -n 's/^llama-cpp-python==//p' requirements.lock)"
        for wheel in "$llama_cache"/llama_cpp_python-"$version"-*.whl; do
            [ -e "$wheel" ] && cp "$wheel" "$dir/wheels/"
        done
    fi
    ca="${IMAGE_EXTRA_CA-${PIP_CERT:-}}"
    if [ -n "$ca" ] && [ -s "$ca" ]; then cp "$ca" "$dir/ca.pem"; else : >"$dir/ca.pem"; fi
    echo "staged: $(ls "$dir/wheels" | tr '\n' ' ')$([ -s "$dir/ca.pem" ] && echo "+ extra CA from $ca")"
}

base_image() {
    local base="${BASE_IMAGE:-$default_base}"
    if run_engine image exists "$base" 2>/dev/null || run_engine image inspect "$base" >/dev/null 2>&1; then
        echo "$base"; return
    fi
    if run_engine pull "$base" >/dev/null 2>&1; then echo "$base"; return; fi
    if [ -n "${BASE_IMAGE:-}" ]; then
        echo "cannot find or pull BASE_IMAGE=$base" >&2; exit 1
    fi
    echo "cannot pull $base (no image registry reachable?); using $local_base built from Debian packages" >&2
    if ! run_engine image inspect "$local_base" >/dev/null 2>&1; then
        CONTAINER_ENGINE="$engine" IMAGE_ENGINE_OPTS="${engine_opts[*]}" \
            scripts/container-base-image.sh "$local_base" >&2
    fi
    echo "$local_base"
}

build() {
    stage
    local base start
    base="$(base_image)"
    start=$(date +%s)
    run_engine build "${build_runtime[@]}" "${limit_opts[@]}" ${IMAGE_BUILD_OPTS:-} \
        --build-arg "BASE_IMAGE=$base" \
        --build-arg "WITH_RERANKER=${WITH_RERANKER:-false}" \
        -f Containerfile -t "$image" .
    echo "built $image from $base in $(( $(date +%s) - start )) s;" \
        "size $(run_engine image inspect "$image" --format '{{.Size}}' | awk '{printf "%.0f MB", $1/1e6}')"
}

run() {
    local port="${IMAGE_PORT:-8000}" volume="${IMAGE_VOLUME:-appliance-data}"
    local admin="${APPLIANCE_AUTH__ADMIN_KEYS:-example-admin-key-change-me}"
    local client="${APPLIANCE_AUTH__CLIENT_KEYS:-example-client-key-change-me}"
    if [ -z "${APPLIANCE_AUTH__ADMIN_KEYS:-}" ]; then
        echo "using example keys (admin: $admin, client: $client); set APPLIANCE_AUTH__ADMIN_KEYS" \
            "and APPLIANCE_AUTH__CLIENT_KEYS for real ones" >&2
    fi
    # Any other APPLIANCE_* variable of this shell is passed on as configuration.
    local env_opts=() name
    while IFS= read -r name; do
        case "$name" in
            APPLIANCE_AUTH__ADMIN_KEYS|APPLIANCE_AUTH__CLIENT_KEYS|APPLIANCE_WHEEL_CACHE|APPLIANCE_ADMIN_KEY) ;;
            APPLIANCE_*) env_opts+=(-e "$name") ;;
        esac
    done < <(compgen -e)
    exec "$engine" "${engine_opts[@]}" run --rm "${limit_opts[@]}" ${IMAGE_RUN_OPTS:-} \
        --name "${IMAGE_CONTAINER:-appliance}" \
        -p "$port:8000" -v "$volume:/data" \
        -e "APPLIANCE_AUTH__ADMIN_KEYS=$admin" -e "APPLIANCE_AUTH__CLIENT_KEYS=$client" \
        "${env_opts[@]}" --stop-timeout 35 "$image" "$@"
}

case "${1:-}" in
    stage) stage ;;
    build) build ;;
    run) shift; run "$@" ;;
    *) echo "usage: scripts/image.sh stage|build|run [appliance serve options]" >&2; exit 2 ;;
esac
