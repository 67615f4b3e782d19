# make demo / make test / make bench -- each creates .venv and installs the project on first use
# (a second run installs nothing).  The demo's synthetic data set is generated into data/ on first use.
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
	$(PY) tools/train.py --cfg configs/demo/pose_bsam_demo.yaml

test: $(STAMP)
	$(PY) -m pytest -q --durations=15

bench: $(STAMP)
	$(PY) benchmarks/optim_overhead.py
	$(PY) benchmarks/train_throughput.py

clean:
	rm -rf $(VENV) output
