# The boot record (fw/boot.json) at boot and after a failed trial: loaded by the boot loader
# (bootloader.py) only for that, and dropped before the firmware runs, so that its code takes no
# RAM meanwhile (docs/fleet.md).
import json


def read_json(path):
    try:
        with open(path) as f:
            value = json.load(f)
        return value if isinstance(value, dict) else {}
    except (OSError, ValueError):
        return {}


def write_json(path, value):
    import os

    with open(path + ".tmp", "w") as f:
        json.dump(value, f)
    os.rename(path + ".tmp", path)


def _exists(path):
    import os

    try:
        os.stat(path)
        return True
    except OSError:
        return False


def esp32_cause():
    try:
        import machine

        return {
            machine.PWRON_RESET: "power_on",
            machine.HARD_RESET: "hard",
            machine.WDT_RESET: "watchdog",
            machine.DEEPSLEEP_RESET: "deep_sleep",
            machine.SOFT_RESET: "soft",
        }.get(machine.reset_cause(), "unknown")
    except (ImportError, AttributeError):
        return "unknown"


def choose(fwdir, cause):
    """The slot to boot (None: the factory firmware) and the boot information for it."""
    path = fwdir + "/boot.json"
    rec = read_json(path)
    changed = False
    if rec.get("cause"):
        cause = rec.pop("cause")
        changed = True
    trial = rec.get("trial")
    slot = rec.get("active")
    if isinstance(trial, dict):
        if trial.get("booted"):  # booted once and never confirmed (a reset, a power cut)
            rec["failed"], rec["told"], rec["trial"] = trial.get("version"), False, None
            cause = "rollback"
            trial = None
        else:
            trial["booted"] = True
            slot = trial.get("slot")
        changed = True
    else:
        trial = None
    if changed:
        write_json(path, rec)
    if slot not in ("a", "b") or not _exists(fwdir + "/" + slot):
        slot = None
    version = None
    if slot is not None:
        try:
            with open(fwdir + "/" + slot + "/VERSION") as f:
                version = f.read().strip()
        except OSError:
            pass
    boot = {
        "slot": slot,
        "version": version,
        "trial": trial is not None and slot is not None,
        "cause": cause,
        "failed": rec.get("failed"),
        "told": rec.get("told", True),
        "fwdir": fwdir,
        "confirmed": False,
    }
    return slot, boot


def roll_back(fwdir, boot):
    path = fwdir + "/boot.json"
    rec = read_json(path)
    trial = rec.get("trial") or {}
    rec["failed"], rec["told"], rec["trial"] = trial.get("version", boot["version"]), False, None
    rec["cause"] = "rollback"
    write_json(path, rec)
    print(
        "boot: slot {} ({}) failed, back to the one before".format(boot["slot"], boot["version"])
    )
