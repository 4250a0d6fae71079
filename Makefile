# Two commands set everything up on a fresh machine (Python 3.11 with venv):
#   make demo   create .venv, install deltacd, run it on the bundled Pléiades example (outputs in ./deltacd-demo)
#   make test   create .venv, install deltacd with test tools, run the tests (real data in ../shared/data)
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first, pinned: pip takes the release stored on this machine's disk.
	$(BIN)/python -m pip install --quiet -c constraints.txt torch torchvision
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[learn,test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/deltacd demo --out deltacd-demo --overwrite

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) deltacd-demo
