# classlocker firmware entry point (the ESP32 runs main.py at boot; the unix port runs it as
#   micropython firmware/main.py      with ./device.json or $LOCKER_DEVICE
# and the compiled build as
#   micropython -c "import sys; sys.path.insert(0,'build/firmware'); import main"
# The boot loader (bootloader.py) picks the firmware to run: the one beside this file, or an
# update installed over the air into a slot on the flash filesystem (docs/fleet.md).
import sys

_here = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
for _p in (_here + "/lib", _here):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import bootloader  # noqa: E402

bootloader.boot(_here)
