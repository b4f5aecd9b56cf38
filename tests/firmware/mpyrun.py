# Runs one firmware test module under MicroPython and reports each case on a line of its own:
#   @@case {"name": "test_x", "outcome": "passed" | "failed" | "skipped", "detail": "..."}
# Used by tests/firmware/conftest.py; runnable by hand too:
#   .venv/bin/micropython tests/firmware/mpyrun.py test_policy [test_name ...]
import io
import json
import os
import sys

_here = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
sys.path.insert(0, _here + "/../../firmware")
sys.path.insert(0, _here)
# The firmware and the test modules as a board loads them: compiled by mpy-cross (conftest.py does
# that once per run). Compiling a module from source needs far more RAM than running it does.
# Without MPYTEST_COMPILED (by hand) everything is compiled from source.
_compiled = os.getenv("MPYTEST_COMPILED")
if _compiled:
    sys.path.insert(0, _compiled)

from mpytest import SkipTest  # noqa: E402


def _report(name, outcome, detail=""):
    print("@@case " + json.dumps({"name": name, "outcome": outcome, "detail": detail}))


def main():
    modname = sys.argv[1]
    wanted = sys.argv[2:]
    mod = __import__(modname)
    names = wanted or sorted(n for n in dir(mod) if n.startswith("test_"))
    for name in names:
        fn = getattr(mod, name)
        try:
            fn()
        except SkipTest as e:
            _report(name, "skipped", str(e))
        except BaseException as e:  # noqa: B036 - a test may raise anything; report it
            buf = io.StringIO()
            sys.print_exception(e, buf)
            _report(name, "failed", buf.getvalue())
        else:
            _report(name, "passed")


main()
