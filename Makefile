# Two commands do everything on a fresh clone: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
AZURITE_DIR := .azurite

.PHONY: setup chromium demo demo-clean test lint format bench azurite azurite-stop clean

INFRA_VENV := .venv-infra

JS_SDK := tests/js_sdk

# The demo needs only the venv (with the `tablebackup` command) and Azurite (node_modules/.bin/azurite).
DEMO_DEPS := $(VENV)/.installed node_modules/.installed

AZCLI_VENV := .venv-azcli
# The TypeScript audit client (tablebackup-audit), built and tested end to end by pytest.
CLIENT_JS := clients/js

# Everything the tests need besides: the JS SDK, checkov for the Bicep, the real Azure CLI and
# Chromium for the status page.
setup: $(DEMO_DEPS) $(JS_SDK)/node_modules/.installed $(INFRA_VENV)/.installed $(AZCLI_VENV)/.installed \
  $(CLIENT_JS)/dist/index.js chromium

# The status page's browser test runs Debian's chromium headless; as root (CI) it is installed here.
APT_INSTALL := DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    $(APT_INSTALL) >/dev/null 2>&1 || { apt-get update -qq && $(APT_INSTALL); }; \
	  else \
	    echo "the browser test needs chromium: run 'sudo apt-get install -y chromium'" >&2; exit 1; \
	  fi; }

# The project itself is installed editable (its dependencies are the pinned ones above): the venv's
# `tablebackup` command runs this checkout's code from any folder.
$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "Python 3.11 is required; set PYTHON=/path/to/python3.11")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	@touch $@

$(INFRA_VENV)/.installed: requirements-infra.txt
	@test -x $(INFRA_VENV)/bin/python || $(PYTHON) -m venv $(INFRA_VENV)
	$(INFRA_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-infra.txt
	@touch $@

# The real Azure CLI, in its own venv (its pinned dependencies are not the app's): tests run
# `az storage entity query` against Azurite to make the Azure CLI export fixtures.
$(AZCLI_VENV)/.installed: requirements-azcli.txt
	@test -x $(AZCLI_VENV)/bin/python || $(PYTHON) -m venv $(AZCLI_VENV)
	$(AZCLI_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-azcli.txt
	@touch $@

$(CLIENT_JS)/node_modules/.installed: $(CLIENT_JS)/package.json $(CLIENT_JS)/package-lock.json
	npm ci --prefix $(CLIENT_JS) --no-audit --no-fund --loglevel=error
	@touch $@

$(CLIENT_JS)/dist/index.js: $(CLIENT_JS)/node_modules/.installed $(CLIENT_JS)/src/index.ts $(CLIENT_JS)/tsconfig.json
	npm run build --prefix $(CLIENT_JS) --silent

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# The Azure Tables JS SDK, with which tests write fixtures as JavaScript applications do.
$(JS_SDK)/node_modules/.installed: $(JS_SDK)/package.json $(JS_SDK)/package-lock.json
	npm ci --prefix $(JS_SDK) --no-audit --no-fund --loglevel=error
	@touch $@

demo: $(DEMO_DEPS)
	$(PY) -m localdev.demo

# Stops the Azurite the demo started (if it did), deletes its data (.azurite) and .demo/.
demo-clean:
	$(if $(wildcard $(PY)),$(PY),$(PYTHON)) -m localdev.demo clean

# The installs are independent (venvs, npm trees, a Debian package): made side by side, as a fresh
# clone (CI) would otherwise spend minutes on them one after another.
test:
	@$(MAKE) --no-print-directory -j4 setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(INFRA_VENV)/bin/checkov -d infra --framework bicep --skip-download --quiet --compact
	# One process per core (pytest-xdist), each with its own Azurite: CI has two.
	$(PY) -m pytest -n auto

lint: $(VENV)/.installed $(INFRA_VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(INFRA_VENV)/bin/checkov -d infra --framework bicep --skip-download --quiet --compact

format: $(VENV)/.installed
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: $(DEMO_DEPS)
	$(PY) -m bench
	$(PY) -m bench.import_order
	$(PY) -m bench.scale

# Azurite on the default ports in the background, data in $(AZURITE_DIR) (for func start).
azurite: $(DEMO_DEPS)
	$(PY) -m localdev.azurite start

azurite-stop:
	-$(PY) -m localdev.azurite stop

clean: azurite-stop
	rm -rf $(VENV) $(INFRA_VENV) $(AZCLI_VENV) node_modules $(JS_SDK)/node_modules $(CLIENT_JS)/node_modules $(CLIENT_JS)/dist $(AZURITE_DIR) .demo .pytest_cache .ruff_cache .bench \
	  *.egg-info build
