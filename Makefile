# Two commands set everything up on a fresh machine (Python 3.11 with venv):
#   make demo   create .venv, install deltacd, run it on the bundled Pléiades example (outputs in ./deltacd-demo)
#   make test   create .venv, install deltacd with test tools, run the tests (real data in ../shared/data)
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install clean docs webmap-assets

$(STAMP): pyproject.toml constraints.txt benchmarks/requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first, pinned: pip takes the release stored on this machine's disk.
	$(BIN)/python -m pip install --quiet -c constraints.txt torch torchvision
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[learn,scale,test,docs]"
	# the benchmark scripts' own needs (torchgeo peer, numexpr): research tools, not the product's extras
	$(BIN)/python -m pip install --quiet -c constraints.txt -r benchmarks/requirements.txt
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/deltacd demo --out deltacd-demo --overwrite

# The web map is tested in a real browser: Debian's Chromium, driven by Playwright (pip, test extras).
CHROMIUM := /usr/bin/chromium

$(CHROMIUM):
	@command -v apt-get >/dev/null || { echo "install Chromium at $(CHROMIUM) (the web map tests drive it)"; exit 1; }
	apt-get update -qq && apt-get install -y -qq chromium >/dev/null

test: $(STAMP) $(CHROMIUM)
	$(BIN)/lint-imports  # the layers of docs/architecture.md (pyproject.toml: tool.importlinter)
	$(BIN)/python -m pytest -q
	$(BIN)/mkdocs build --strict --site-dir .site  # a broken link or a missing page fails the tests

docs: $(STAMP)
	$(BIN)/mkdocs serve

clean:
	rm -rf $(VENV) deltacd-demo .site

# Refresh the web map's front-end library from the npm registry (the copy in the package is committed,
# so neither a build nor a run needs npm or a network).
webmap-assets:
	cd tools/webmap && npm ci --no-audit --no-fund
	cp tools/webmap/node_modules/leaflet/dist/leaflet.js tools/webmap/node_modules/leaflet/dist/leaflet.css src/deltacd/report/webmap_assets/
	cp tools/webmap/node_modules/leaflet/dist/images/*.png src/deltacd/report/webmap_assets/images/
	cp tools/webmap/node_modules/leaflet/LICENSE src/deltacd/report/webmap_assets/LEAFLET-LICENSE
