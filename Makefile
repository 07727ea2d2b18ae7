# Everything a fresh machine needs is set up by these targets (Python 3.11+ required).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
ARGS ?=

PORT ?=
BOARD ?= esp32
CONFIG ?=
IMAGE ?=

.PHONY: test sim bench compile deploy flash repl logs clean

$(BIN)/pytest: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

build/lib/umqtt/simple.py: $(BIN)/pytest
	$(BIN)/python tools/fetch_umqtt.py

compile: $(BIN)/pytest
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m tools.device.compile build/mpy

test: $(BIN)/pytest build/lib/umqtt/simple.py
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/pytest -q host_tests

sim: $(BIN)/pytest build/lib/umqtt/simple.py compile
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m tools.bench.sim $(ARGS)

bench: $(BIN)/pytest build/lib/umqtt/simple.py compile
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m tools.measure.perf $(ARGS)

deploy: $(BIN)/pytest
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m tools.device.deploy --board $(BOARD) \
		$(if $(PORT),--port $(PORT)) $(if $(CONFIG),--config $(CONFIG)) $(ARGS)

flash: $(BIN)/pytest
	$(BIN)/python -m tools.device.flash_firmware $(if $(PORT),--port $(PORT)) $(if $(IMAGE),--image $(IMAGE)) $(ARGS)

repl: $(BIN)/pytest
	$(BIN)/mpremote connect $(or $(PORT),auto) repl

logs: $(BIN)/pytest
	$(BIN)/mpremote connect $(or $(PORT),auto) resume repl

clean:
	rm -rf build $(VENV)
