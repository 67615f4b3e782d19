# make demo / make test / make bench -- each creates .venv and installs the project on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test bench install clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test,tensorboard]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) tools/optim_demo.py

test: $(STAMP)
	$(PY) -m pytest -q --durations=15

bench: $(STAMP)
	$(PY) benchmarks/optim_overhead.py

clean:
	rm -rf $(VENV) output
