# Everything a fresh machine needs is set up by these targets (Python 3.11+ required).
# `make` alone, or `make help`, lists them.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
ARGS ?=

PORT ?=
BOARD ?= esp32
SEED ?=
SEEDS ?=
INTERP ?=
CONFIG ?=
IMAGE ?=
BROKER ?=
# make test's parallel workers: most tests wait on a broker, a bench or a subprocess rather
# than compute, so more workers than cores pays (docs/bench.md, "Tests").
JOBS ?= 6

.DEFAULT_GOAL := help
.PHONY: help test sim evctl bench fuzz compile unix32 deploy flash repl logs clean page-screenshot

help:
	@echo 'make sim       the simulated charger on a local broker; prints what to type next'
	@echo '               (ARGS="--device-id ID --state-dir DIR --phases 3 ..."; BROKER=HOST:PORT'
	@echo '               uses that broker instead of starting one; --chargers 3 --site-fuse 25:'
	@echo '               three chargers and a site meter behind one supply, docs/site.md;'
	@echo '               --cloud-port 8080 --api-key K: the cloud API beside it, docs/cloud.md)'
	@echo 'make evctl ARGS="status"   drive it: status, read, cap 7.4, limit 10, charge, idle,'
	@echo '               watch, ev connected=true, fault pilot_short, power off (ARGS=--help for all;'
	@echo '               the same CLI is .venv/bin/evctl, usable from anywhere)'
	@echo 'make test      set up .venv (first time: about a minute), lint (ruff), compile, run'
	@echo '               host_tests/'
	@echo 'make bench     measure the charger against the physical limits (a table)'
	@echo 'make fuzz      many more seeded scenario timelines than make test plays, a summary'
	@echo '               (SEEDS=500, INTERP=cpython|micropython|both; SEED=n replays one,'
	@echo '               ARGS=--shrink shortens a failing one; ARGS=--site: sites of chargers)'
	@echo 'make page-screenshot   the browser test of make sim'"'"'s page, then its screenshot'
	@echo '               to docs/bench-page.png (the README'"'"'s picture)'
	@echo 'make unix32    build/unix32/micropython: v1.28.0, 32-bit, the agent frozen in'
	@echo '               (an ESP32'"'"'s memory model; needs gcc-multilib; ARGS=esp32: what an'
	@echo '               ESP32 image freezes, build/unix32/micropython-esp32)'
	@echo 'make flash PORT=/dev/ttyUSB0 IMAGE=ESP32_GENERIC-v1.28.0.bin   MicroPython, once'
	@echo 'make deploy PORT=/dev/ttyUSB0 CONFIG=garage.local.json        the agent and its config'
	@echo '               (ARGS="--dry-run DIR" writes the tree to DIR instead)'
	@echo 'make repl PORT=/dev/ttyUSB0    the board'"'"'s REPL'
	@echo 'make logs PORT=/dev/ttyUSB0    watch the board'"'"'s console without resetting it'
	@echo 'make clean     remove build/ and .venv/'

$(BIN)/pytest: requirements.txt
	@echo "make: setting up $(VENV) (about a minute the first time) ..."
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install -r requirements.txt
	touch $@

# evctl from anywhere: the CLI with this checkout on its path.
$(BIN)/evctl: $(BIN)/pytest
	printf '#!/bin/sh\nPYTHONPATH="%s" exec "%s/python" -m tools.evctl "$$@"\n' \
		"$(CURDIR)" "$(CURDIR)/$(BIN)" > $@
	chmod +x $@

compile: $(BIN)/pytest
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m tools.device.compile build/mpy

# build/unix32/micropython: MicroPython v1.28.0, 32-bit, the agent frozen in (needs gcc-multilib);
# ARGS=esp32: build/unix32/micropython-esp32, with what an ESP32 image freezes instead.
unix32: $(BIN)/pytest
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m tools.device.unix32 $(ARGS)

# ruff first (ruff.toml): a finding fails make test before any test runs.
test: $(BIN)/pytest $(BIN)/evctl
	$(BIN)/ruff check .
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/pytest -q -n $(JOBS) --dist worksteal --durations=15 host_tests

# exec: the launcher takes the terminal's Ctrl-C and stops cleanly (make prints no
# "*** Interrupt" for a clean stop).
sim: $(BIN)/pytest $(BIN)/evctl compile
	PATH=$(CURDIR)/$(BIN):$$PATH exec $(BIN)/python -m tools.bench.sim \
		$(if $(BROKER),--broker $(BROKER)) $(ARGS)

# The browser test writes build/bench-page.png on every run (and removes a stale one first).
page-screenshot: $(BIN)/pytest compile
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/pytest -q -rs host_tests/test_bench_page.py
	@test -s build/bench-page.png || { echo "make: no screenshot (the browser test skipped)"; exit 1; }
	cp build/bench-page.png docs/bench-page.png

evctl: $(BIN)/evctl
	@PATH=$(CURDIR)/$(BIN):$$PATH exec $(BIN)/evctl $(if $(BROKER),--broker $(BROKER)) $(ARGS)

bench: $(BIN)/pytest compile
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m tools.measure.perf $(ARGS)

# The scenario fuzzer: many seeds (SEEDS=, default 500) or one (SEED=), INTERP=cpython|micropython|both.
fuzz: $(BIN)/pytest compile
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m tools.bench.fuzz $(if $(SEED),--seed $(SEED)) \
		$(if $(SEEDS),--seeds $(SEEDS)) $(if $(INTERP),--interp $(INTERP)) $(ARGS)

deploy: $(BIN)/pytest
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m tools.device.deploy --board $(BOARD) \
		$(if $(PORT),--port $(PORT)) $(if $(CONFIG),--config $(CONFIG)) $(ARGS)

flash: $(BIN)/pytest
	$(BIN)/python -m tools.device.flash_firmware $(if $(PORT),--port $(PORT)) $(if $(IMAGE),--image $(IMAGE)) $(ARGS)

repl: $(BIN)/pytest
	exec $(BIN)/mpremote connect $(or $(PORT),auto) repl

logs: $(BIN)/pytest
	exec $(BIN)/mpremote connect $(or $(PORT),auto) resume repl

clean:
	rm -rf build $(VENV)
