# The two commands of the README: `make run` and `make test`. Both set up .venv themselves.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
FLASK  := $(BIN)/flask --app codexweb
HOST   ?= 127.0.0.1
PORT   ?= 5000

.PHONY: run test lint format bench bench-floor wrk clean

# Re-install only when the dependency list changes.
$(VENV)/.installed-run: setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e .
	touch $@

$(VENV)/.installed-test: setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@ $(VENV)/.installed-run

run: $(VENV)/.installed-run
	$(FLASK) db upgrade
	$(FLASK) run --host $(HOST) --port $(PORT)

test: $(VENV)/.installed-test
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.installed-test
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# `make bench` / `make bench ARGS=--quick`: codexweb against bare Flask (docs/PERFORMANCE.md).
# wrk comes from Debian's packages; installed here when missing.
bench: $(VENV)/.installed-run
	@command -v wrk >/dev/null || $(MAKE) --no-print-directory wrk
	$(BIN)/python -m bench.run $(ARGS)
	$(BIN)/python -m bench.chatkit $(ARGS)

# `make bench-floor`: what the work itself costs on this stack, under issue 16's targets.
bench-floor: $(VENV)/.installed-run
	@command -v wrk >/dev/null || $(MAKE) --no-print-directory wrk
	$(BIN)/python -m bench.floor api $(ARGS)
	$(BIN)/python -m bench.floor runtime $(ARGS)

APT_GET := $(if $(filter 0,$(shell id -u)),,sudo) apt-get -o DPkg::Lock::Timeout=300
wrk:
	$(APT_GET) install -y wrk || { $(APT_GET) update && $(APT_GET) install -y wrk; }

clean:
	rm -rf $(VENV) .pytest_cache
