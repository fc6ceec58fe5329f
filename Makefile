# One venv for development and CI; the images install their own pinned requirements.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
LOCK := requirements/constraints.txt
# The packages' own files too: dev.txt installs each package (editable) with its requirements.
REQS := $(LOCK) requirements/dev.txt infra/requirements.txt infra/pyproject.toml \
        infra/policy/requirements.txt infra/policy/pyproject.toml \
        training_image/requirements.txt training_image/pyproject.toml \
        training_image/rules/pyproject.toml training_image/setup.cfg serving_image/requirements.txt \
        serving_image/pyproject.toml serving_image/setup.cfg rehearsal/pyproject.toml
STAMP := $(VENV)/.installed
# Prompt flow pins starlette/pandas below the server's stack: it gets a venv of its own.
PF_VENV ?= .venv-promptflow
PF_STAMP := $(PF_VENV)/.installed
PF_REQS := scripts/promptflow_chat/requirements.txt scripts/promptflow_chat/constraints.txt

# Every package, the tools, the tests and the benchmarks: mypy --strict (pyproject.toml [tool.mypy]).
TYPED := infra/phi3_infra infra/policy training_image/rules/phi3_training_rules \
         training_image/phi3_trainer serving_image/phi3_server rehearsal/phi3_rehearsal \
         scripts tests bench

.PHONY: setup test test-fast lint format demo plan bench clean

setup: $(STAMP) $(PF_STAMP)

# torch first, from the CPU wheel and pinned by the lock, so no resolve can pull a CUDA build.
$(STAMP): $(REQS)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q -c $(LOCK) torch==2.13.0
	mkdir -p build/egg-info  # the images' egg_base (training_image/setup.cfg)
	$(PIP) install -q -c $(LOCK) -r requirements/dev.txt
	touch $@

$(PF_STAMP): $(PF_REQS)
	test -x $(PF_VENV)/bin/python || python3 -m venv $(PF_VENV)
	$(PF_VENV)/bin/python -m pip install -q --disable-pip-version-check \
		-c scripts/promptflow_chat/constraints.txt -r scripts/promptflow_chat/requirements.txt
	touch $@

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy --explicit-package-bases $(TYPED)
	$(VENV)/bin/hadolint training_image/Dockerfile serving_image/Dockerfile

format: setup
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

test: lint
	$(PY) -m pytest

# The inner loop: no lint, and no test that trains or serves a model (marked slow); CI runs `test`.
test-fast: setup
	$(PY) -m pytest -m "not slow" -q

# The rehearsal of the demo stack (Pulumi.demo.yaml): what `pulumi up` would send, run here.
demo: setup
	$(PY) scripts/rehearse.py --stack demo

plan: setup
	$(PY) scripts/plan.py

bench: setup
	$(PY) -m tests.bench.preflight_concurrency
	$(PY) bench/train_throughput.py
	$(PY) bench/serve_throughput.py

clean:
	rm -rf $(VENV) $(PF_VENV) .pytest_cache .ruff_cache .mypy_cache
