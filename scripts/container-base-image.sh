#!/usr/bin/env bash
# Builds a local stand-in for python:3.11-slim-bookworm from Debian's own packages, for machines
# that reach package registries but no image registry (Docker Hub, quay.io, ghcr.io):
# debootstrap (minbase) + python3 (3.11 in bookworm), python3-venv, python-is-python3,
# ca-certificates, imported as one layer.
# Usage: scripts/container-base-image.sh [TAG]   (needs root and debootstrap; ~90 s)
set -euo pipefail

tag="${1:-localhost/appliance-base:3.11-bookworm}"
engine="${CONTAINER_ENGINE:-podman}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

if ! command -v debootstrap >/dev/null; then
    echo "debootstrap is needed: apt-get install -y debootstrap" >&2
    exit 1
fi
rootfs="$(mktemp -d /tmp/appliance-base.XXXXXX)"
trap 'rm -rf "$rootfs"' EXIT

debootstrap --variant=minbase \
    --include=python3,python3-venv,python-is-python3,ca-certificates \
    bookworm "$rootfs" "$mirror" >"$rootfs.log" 2>&1 \
    || { tail -20 "$rootfs.log" >&2; exit 1; }
rm -f "$rootfs.log"
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
# The same apt sources as the official images, so that a RUN apt-get install works in it.
echo "deb $mirror bookworm main" >"$rootfs/etc/apt/sources.list"

tar -C "$rootfs" -c . | $engine ${IMAGE_ENGINE_OPTS:-} import \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - "$tag"
echo "built $tag"
