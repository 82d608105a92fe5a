# Two entry points for a fresh machine: `make serve` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Browser libraries: web/package-lock.json pins them; `make vendor` copies only the dist files the
# page loads into app/static/vendor, where they are kept in the repository so that installing the
# package never needs npm.
VENDOR := app/static/vendor
UPLOT := web/node_modules/uplot
SWAGGER := web/node_modules/swagger-ui-dist
# The page's browser test drives Debian's Chromium (a browser download by Playwright cannot work here).
CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: serve test clean vendor

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e '.[torch,bench,test]'
	touch $(STAMP)

serve: $(STAMP)
	$(BIN)/biofo serve

# Two workers, one per core of a 2-core box: 15 min 25 s sequential, about 11 min on two.
test: $(STAMP) $(CHROMIUM)
	$(BIN)/python -m pytest -n 2

$(CHROMIUM):
	$(SUDO) apt-get update
	$(SUDO) apt-get install -y chromium

vendor:
	cd web && npm ci --ignore-scripts --no-audit --no-fund
	mkdir -p $(VENDOR)
	cp $(UPLOT)/dist/uPlot.iife.min.js $(UPLOT)/dist/uPlot.min.css $(VENDOR)/
	cp $(UPLOT)/LICENSE $(VENDOR)/uPlot.LICENSE
	cp $(SWAGGER)/swagger-ui-bundle.js $(SWAGGER)/swagger-ui.css $(VENDOR)/
	cp $(SWAGGER)/LICENSE $(VENDOR)/swagger-ui.LICENSE

clean:
	rm -rf $(VENV) build *.egg-info web/node_modules
