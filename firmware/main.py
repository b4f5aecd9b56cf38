# classlocker firmware entry point (the ESP32 runs main.py at boot; the unix port runs it as
#   micropython firmware/main.py      with ./device.json or $LOCKER_DEVICE
# and the compiled build as
#   micropython -c "import sys; sys.path.insert(0,'build/firmware'); import main"
import json
import sys

_here = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
for _p in (_here + "/lib", _here):
    if _p not in sys.path:
        sys.path.insert(0, _p)


def _device_path():
    try:
        import os

        return os.getenv("LOCKER_DEVICE") or "device.json"
    except (ImportError, AttributeError):  # the ESP32's os has no getenv
        return "device.json"


def _load_device(path):
    try:
        with open(path) as f:
            return json.load(f)
    except OSError:
        raise SystemExit(
            "locker: cannot read {} (set LOCKER_DEVICE or write device.json)".format(path)
        )
    except ValueError:
        raise SystemExit("locker: {} is not valid JSON".format(path))


device = _load_device(_device_path())
import app  # noqa: E402

try:
    app.run(device)
except ValueError as e:  # a mistake in device.json: one line, no traceback
    raise SystemExit("locker: {}".format(e))
