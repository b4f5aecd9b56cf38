# ruff: noqa: F821 -- include/require/package are provided by MicroPython's manifest runner
# Freezes the classlocker firmware into a custom MicroPython image for the ESP32, so the modules
# run from flash as bytecode (no RAM spent compiling or loading them) and cannot be altered
# through the filesystem. Build (docs/hardware.md, "A custom image"):
#
#   cd micropython/ports/esp32
#   make BOARD=ESP32_GENERIC FROZEN_MANIFEST=/path/to/classlocker/firmware/manifest.py
#
# Then write the image with esptool and copy only main.py, pinmap.json and device.json:
#   .venv/bin/python tools/flash.py --port /dev/ttyUSB0 --device L1.json --frozen
# Files on the filesystem come before frozen modules on sys.path, so a plain `make flash` over a
# frozen image still runs the copied modules.
#
# Paths are relative to this file's directory. This file is the build's recipe, not firmware:
# tools/flash.py never copies it to a board.

# The port's own frozen set: asyncio, ntptime, network helpers (bundle-networking), ...
include("$(PORT_DIR)/boards/manifest.py")

# MQTT client from micropython-lib (the same one `make firmware` puts in build/firmware/lib)
require("umqtt.simple")

# The firmware: the composition root main.py imports, the pure logic, the ESP32 board (not the
# simulated one, hal/sim/) and the chip drivers
module("app.py")
package("locker")
package("hal", files=("__init__.py", "esp32.py"))
package("drivers")
