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
	@touch $(STAMP)

install: $(STAMP)

# rebuild the embedded default on this machine into .cache/models/tiny-distrust and say how it compares
# with the shipped weights in yourai/models/tiny-distrust; YOURAI_DEFAULT_MODEL=<dir> makes "default" use it
model: $(STAMP)
	$(VENV)/bin/yourai build-model

# doctor, a short generation from the embedded default (the shipped weights),
# then all six notebooks under papermill → runs/$(NAME)/summary.md
demo: $(STAMP)
	$(VENV)/bin/yourai doctor
	$(VENV)/bin/yourai generate --prompt "The specimen was weighed and" --max-tokens 40
	$(VENV)/bin/yourai run --name $(NAME)

test: $(STAMP)
	$(PY) -m pytest tests notebooks --nbval-lax --nbval-current-env \
		--nbval-sanitize-with .ci/nbval_sanitize.cfg -p no:cacheprovider

test-fast: $(STAMP)
	$(PY) -m pytest tests -m "not slow and not browser and not distributed" -p no:cacheprovider

clean-venv:
	rm -rf $(VENV)
