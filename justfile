set quiet
set shell := ["bash", "-euo", "pipefail", "-c"]

# List the recipes
default:
    just --list

# Install into .venv: CPU torch, pinned dependencies, model files (EXTRAS e.g. "dev,llamacpp")
install extras="":
    scripts/install.sh "{{extras}}"

# Install, load the demo catalog and serve it at http://127.0.0.1:8000
demo: install
    .venv/bin/appliance demo

# Serve the API on the data in ./data
serve: install
    .venv/bin/appliance serve

# Install with the test tools (wrk too) and the llama.cpp extra, then run the whole test suite
test: (install "dev,llamacpp")
    scripts/install-bench-tools.sh
    .venv/bin/python -m pytest

# Open the terminal dashboard of a running appliance (URL from APPLIANCE_URL, default :8000)
tui *args: (install "tui")
    .venv/bin/appliance tui {{args}}

# PNG screenshots of every dashboard page into docs/screenshots, from a running appliance (e.g. the demo)
screenshots url="http://127.0.0.1:8000": (install "dev,llamacpp")
    .venv/bin/python scripts/screenshots.py --url {{url}}

# Lint, type-check and check the import contracts
lint: (install "dev,llamacpp")
    .venv/bin/ruff check appliance tui tests scripts bench
    .venv/bin/mypy
    .venv/bin/lint-imports

# Re-pin requirements.lock from pyproject.toml (torch pinned to its CPU build, found in TORCH_WHEELS)
lock:
    printf 'torch==2.13.0+cpu\n' > /tmp/appliance-torch-override.txt
    .venv/bin/uv pip compile pyproject.toml --extra dev --extra llamacpp --extra tui --python-version 3.11 \
        --find-links "${TORCH_WHEELS:-/opt/wheels}" --override /tmp/appliance-torch-override.txt \
        --no-header -o requirements.lock

# Single-request latency of POST /recommendations against a running appliance (e.g. the demo)
latency url="http://127.0.0.1:8000":
    .venv/bin/python bench/latency.py --url {{url}} --requests 500 --top-k 5

# Measure quality on ../shared/datasets (dev split): most-popular, retrieval, retrieval + each re-ranker
eval *args: (install "llamacpp,dev")
    scripts/with-llama-server.sh .venv/bin/appliance eval --rerank llamacpp --rerank openai {{args}}

# Load benchmark at 100K items (issue 4): wrk against `appliance serve`, report in bench/results
bench *args: (install "llamacpp")
    scripts/install-bench-tools.sh
    .venv/bin/python -m bench.run --items 100000 {{args}}

# Build the benchmark's 100K-item data directory once (bench/data; `just bench` reuses it)
bench-build: (install "llamacpp")
    .venv/bin/python -m bench.run --items 100000 --build-only

# Time of one learning of the fusion weights at the most impressions it reads (synthetic impressions)
fusion-training *args: install
    .venv/bin/python bench/fusion_training.py {{args}}

# Latency of one re-rank call on 10 candidates: llama.cpp in-process, and OpenAI-compatible on loopback
rerank-latency: (install "llamacpp,dev")
    scripts/with-llama-server.sh sh -c '.venv/bin/python bench/rerank.py --openai-url "$APPLIANCE_RERANKER__BASE_URL"'

# Build the container image (Containerfile) with podman or docker; WITH_RERANKER=true adds llama.cpp
image:
    scripts/image.sh build

# Run the image: port 8000, named volume appliance-data at /data, example API keys unless set
run-image *args:
    scripts/image.sh run {{args}}

# Soak: mixed traffic against `appliance serve` for SECONDS (default 600); prints rates, latency and RSS
soak seconds="600": (install "dev,llamacpp")
    SOAK_SECONDS={{seconds}} .venv/bin/python -m pytest tests/e2e/test_soak.py -q -s
