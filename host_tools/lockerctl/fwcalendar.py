"""The lockers' own calendar on the host: firmware/locker/timetable.py, run as it is.

The host's school hours (alerts, the report) must be the ones the lockers enforce, so the host
runs the firmware's `Timetable` rather than a copy. The source travels in the package as
`data/locker_timetable.pysrc` (a link to firmware/locker/timetable.py in the repository; the
file itself in a wheel). It is MicroPython code that takes `const` from the firmware's `locker`
package (`from locker import const`); it is run here with that one import answered by a
stand-in, in a namespace of its own, so that nothing named `locker` is put in `sys.modules`
(the firmware's tests import the real one in the same process).
"""

from __future__ import annotations

import builtins
import types
from importlib import resources
from typing import Any

SOURCE = "data/locker_timetable.pysrc"
_FIRMWARE_PACKAGE = types.SimpleNamespace(const=lambda x: x)


def _import(name, globals=None, locals=None, fromlist=(), level=0):
    if name == "locker" and level == 0:
        return _FIRMWARE_PACKAGE
    if name == "micropython":
        raise ImportError(name)
    return builtins.__import__(name, globals, locals, fromlist, level)


def _load() -> types.ModuleType:
    source = resources.files("lockerctl").joinpath(SOURCE).read_text(encoding="utf-8")
    module = types.ModuleType("lockerctl.fwcalendar.locker_timetable")
    module.__dict__["__builtins__"] = {**builtins.__dict__, "__import__": _import}
    exec(compile(source, "firmware/locker/timetable.py", "exec"), module.__dict__)
    return module


firmware_timetable = _load()
Timetable: Any = firmware_timetable.Timetable
