# The two commands in README.md. Each does all set-up itself (scripts/setup.sh) and is fast when
# already set up: the virtualenv is rebuilt only when pyproject.toml, constraints.txt or the
# set-up script change.
VENV    ?= .venv
HVD     := $(VENV)/bin/hvd
PYTHON  := $(VENV)/bin/python
READY   := $(VENV)/.hvd-ready
DEMO    ?= data/synth-demo

.PHONY: demo test setup clean-demo transfer

setup: $(READY)

$(READY): pyproject.toml constraints.txt scripts/setup.sh
	HVD_VENV=$(VENV) bash scripts/setup.sh
	touch $@

## make demo: the main job on the synthetic default dataset
demo: $(READY)
	$(HVD) data synth --out $(DEMO) --preset demo
	$(HVD) prep all --source synth-demo
	$(HVD) catalog show
	$(HVD) train pretrain --preset demo

## make test: the test suite
test: $(READY)
	$(PYTHON) -m pytest -q

## make transfer: the transfer experiment of docs/RESULTS.md (about 1 h 50 min on 2 CPU cores)
transfer: $(READY)
	PYTHON=$(PYTHON) bash scripts/fetch_teacher_weights.sh
	$(HVD) data synth --out data/synth-transfer --preset transfer
	$(HVD) prep all --source synth-transfer
	$(PYTHON) bench/transfer.py

clean-demo:
	rm -rf $(DEMO) stores/synth-demo
