# classlocker's boot loader, run by main.py (docs/fleet.md). It stays fixed: an over-the-air
# update never replaces it (nor main.py). A module of its own so that a board runs it compiled
# (main.py stays source, and source is compiled in RAM at boot).
#
# It picks the firmware to run from the boot record `fw/boot.json` in the data
# directory: the firmware beside main.py (the one `make flash` copied: "factory"), or slot `a`
# or `b` on the flash filesystem (`fw/a/`, `fw/b/`), where updates are installed. A slot on
# trial (just installed, not yet confirmed) gets one boot: if it raises at boot or has not
# confirmed itself (come online) within `update_confirm_s`, the boot record goes back to the
# slot before and that runs instead. On the simulated board a reset restarts the firmware in
# this process: every socket it opened is closed (its control port is back at once), its
# modules are dropped, and device.json is read again.
import sys

_here = "."  # the boot loader's directory (main.py's), set by boot()
_CONFIRM_S = 300  # default of the setting update_confirm_s


class _Reset(BaseException):
    """The firmware asked for a reset (simulated board): out of asyncio.run, to the loop below.
    A BaseException: no `except Exception` in the firmware or in asyncio stops it."""


class _Unconfirmed(BaseException):
    """A slot on trial did not confirm itself in time."""


def _device_path():
    try:
        import os

        return os.getenv("LOCKER_DEVICE") or "device.json"
    except (ImportError, AttributeError):  # the ESP32's os has no getenv
        return "device.json"


def _load_device(path):
    import json

    try:
        with open(path) as f:
            return json.load(f)
    except OSError:
        raise SystemExit(
            "locker: cannot read {} (set LOCKER_DEVICE or write device.json)".format(path)
        )
    except ValueError:
        raise SystemExit("locker: {} is not valid JSON".format(path))


def _exists(path):
    import os

    try:
        os.stat(path)
        return True
    except OSError:
        return False


_sockets = []


def _track_sockets():
    """Simulated board: every socket the firmware opens is noted, so that a reset closes them
    all (as a power cycle would), whatever state the firmware was in."""
    import socket as real

    class _Shim:
        pass

    shim = _Shim()
    for name in dir(real):
        if not name.startswith("__"):
            setattr(shim, name, getattr(real, name))

    def tracked(*args):
        s = real.socket(*args)
        _sockets.append(s)
        return s

    shim.socket = tracked
    sys.modules["socket"] = shim


def _reset_sim():
    raise _Reset()


def _reset_esp32():
    import machine

    machine.reset()


def _roll_back(fwdir, info):
    import bootrecord

    bootrecord.roll_back(fwdir, info)


async def _deadline(boot, seconds):
    import asyncio

    await asyncio.sleep(seconds)
    if not boot["confirmed"]:
        raise _Unconfirmed()


async def _guarded(app, device, boot, seconds):
    import asyncio

    if boot["trial"]:
        asyncio.create_task(_deadline(boot, seconds))
    await app.main(device)


def _run_slot(slot_dir, device, boot, seconds):
    import asyncio

    for p in (slot_dir + "/lib", slot_dir):
        sys.path.insert(0, p)
    try:
        if _exists(slot_dir + "/app.mpy") or _exists(slot_dir + "/app.py"):
            import app
        else:
            from locker import app
        asyncio.run(_guarded(app, device, boot, seconds))
    finally:
        for p in (slot_dir + "/lib", slot_dir):
            if p in sys.path:
                sys.path.remove(p)


def boot(here):
    global _here
    _here = here
    path = _device_path()
    device = _load_device(path)
    sim = not isinstance(device, dict) or device.get("board", "sim") == "sim"
    if sim:
        _track_sockets()
    for p in (_here + "/lib", _here):
        if p not in sys.path:
            sys.path.insert(0, p)
    import asyncio
    import gc

    base = set(sys.modules)
    if sim:
        cause = "power_on"
    else:
        import bootrecord

        cause = bootrecord.esp32_cause()
    flash = rtc = None
    while True:
        info, slot_dir, seconds, fwdir = {"trial": False}, _here, _CONFIRM_S, None
        try:
            if isinstance(device, dict) and isinstance(device.get("locker_id"), str):
                if sim and flash is None:
                    from hal.sim import flash as simflash

                    flash = simflash.mount_for(device)
                    simflash = None
                fwdir = ("/flash" if sim else device.get("data_dir") or "data") + "/fw"
                import bootrecord

                slot, info = bootrecord.choose(fwdir, cause)
                del sys.modules["bootrecord"]
                bootrecord = None
                if slot is not None:
                    for name in list(sys.modules):  # a slot imports its own hal
                        if name not in base:
                            del sys.modules[name]
                info["flash"] = flash
                info["reset"] = _reset_sim if sim else _reset_esp32
                info["rtc"] = rtc
                device["boot"] = info
                if slot is not None:
                    slot_dir = fwdir + "/" + slot
                settings = device.get("settings")
                if isinstance(settings, dict):
                    seconds = settings.get("update_confirm_s", _CONFIRM_S)
            _run_slot(slot_dir, device, info, seconds)
            return
        except _Reset:
            cause = "reset"
        except _Unconfirmed:
            _roll_back(fwdir, info)
            cause = "rollback"
        except Exception as e:
            if not info["trial"]:
                if isinstance(e, ValueError):  # a mistake in device.json: one line, no traceback
                    raise SystemExit("locker: {}".format(e))
                raise
            sys.print_exception(e)
            _roll_back(fwdir, info)
            cause = "rollback"
        if not sim:
            _reset_esp32()
        # The simulated board's reset: every socket closed, the firmware's modules dropped; the
        # flash stays mounted and the real-time clock runs on (a battery-backed RTC).
        rtc = info.get("rtc")
        for s in _sockets:
            try:
                s.close()
            except OSError:
                pass
        _sockets[:] = []
        asyncio.new_event_loop()
        for name in list(sys.modules):
            if name not in base:
                del sys.modules[name]
        device = info = None
        gc.collect()
        device = _load_device(path)
