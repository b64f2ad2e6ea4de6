#!/usr/bin/env bash
# Installs the benchmark's load generator, wrk (Debian/Ubuntu package), when it is missing.
# Usage: scripts/install-bench-tools.sh   (as root, or with sudo available)
set -euo pipefail

if command -v wrk >/dev/null 2>&1; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "wrk is missing and this system has no apt-get: install wrk (https://github.com/wg/wrk) with its package manager" >&2
    exit 1
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    sudo="sudo"
fi
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq wrk >/dev/null
wrk --version 2>&1 | head -n 1 || true
