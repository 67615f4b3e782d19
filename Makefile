# make demo / make test / make bench -- each creates .venv and installs the project on first use
# (a second run installs nothing).  The demo's synthetic data set is generated into data/ once and
# reused; every `make demo` starts a fresh run and moves an earlier one aside (pose_bsam_demo.replaced-<date>).
#   make demo SEED=1 AMP=none NAME=my_demo     (optional: seed, precision none|bf16|auto, run name)
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

DEMO_CFG := configs/demo/pose_bsam_demo.yaml
# only variables given on the command line: an environment's NAME (WSL sets one) must not rename the run
demo_opt = $(if $(filter command line,$(origin $(1))),$(1) $($(1)))
DEMO_OPTS := $(strip $(call demo_opt,NAME) $(call demo_opt,SEED) $(call demo_opt,AMP))

# one thread unless OMP_NUM_THREADS is set: with another process on one of 2 cores, two threads
# wait on each other and a training step takes 4x longer (measured); on a larger machine set it
demo: export OMP_NUM_THREADS ?= 1
demo: $(STAMP)
	$(PY) -m tasks.pose.synthetic --cfg $(DEMO_CFG)
	$(PY) tools/train.py --cfg $(DEMO_CFG) --overwrite $(if $(DEMO_OPTS),--opts $(DEMO_OPTS))

test: $(STAMP)
	$(PY) -m pytest -q --durations=15

bench: $(STAMP)
	$(PY) benchmarks/optim_overhead.py
	$(PY) benchmarks/train_throughput.py

clean:
	rm -rf $(VENV) output
