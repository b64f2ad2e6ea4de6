#!/usr/bin/env bash
# Run a command while llama.cpp's own OpenAI-compatible server serves the re-ranker's GGUF file on
# loopback: how the openai re-ranker is measured against the in-process llamacpp one on the same
# model. The command finds the server's base URL in APPLIANCE_RERANKER__BASE_URL (which is what
# the openai re-ranker reads); the server is stopped when the command ends.
#
# Usage: scripts/with-llama-server.sh COMMAND [ARGS...]
set -euo pipefail
cd "$(dirname "$0")/.."

port="${LLAMA_SERVER_PORT:-8765}"
export APPLIANCE_RERANKER__BASE_URL="http://127.0.0.1:$port/v1"
log="$(mktemp -t appliance-llama-server.XXXXXX)"
.venv/bin/python -m llama_cpp.server --model models/SmolLM2-135M-Instruct.F16.gguf \
    --host 127.0.0.1 --port "$port" --n_ctx 2048 >"$log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null || true; rm -f "$log"' EXIT

.venv/bin/python - "$APPLIANCE_RERANKER__BASE_URL" "$server" "$log" <<'PY'
import os, sys, time
import httpx

base_url, pid, log = sys.argv[1], int(sys.argv[2]), sys.argv[3]
for _ in range(120):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        sys.exit("llama_cpp.server exited:\n" + open(log, errors="replace").read()[-4000:])
    try:
        if httpx.get(f"{base_url}/models", timeout=1.0).status_code == 200:
            sys.exit(0)
    except httpx.TransportError:
        pass
    time.sleep(0.5)
sys.exit("llama_cpp.server did not answer within 60 s")
PY

"$@"
