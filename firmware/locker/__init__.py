# classlocker firmware: the locker's logic. Nothing in this package touches hardware (it imports
# neither hal nor drivers); the board objects come from hal/, given by app.py.
#
# `const` for every module of the package that also runs under CPython (the tests, the host's
# shared code): `from locker import const`. MicroPython's compiler folds `X = const(...)` by the
# name alone, wherever `const` comes from, so this costs the board nothing.
try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


def unload(name):
    """Drops module `name` from sys.modules and from its package, so that its code is garbage once
    nothing refers to it: for what runs once or rarely (docs/memory.md)."""
    import sys

    sys.modules.pop(name, None)
    package, _, attr = name.rpartition(".")
    parent = sys.modules.get(package)
    if parent is not None and attr in getattr(parent, "__dict__", ()):
        delattr(parent, attr)


def makedirs(path):
    """Makes directory `path` and its parents, those that exist already being no error."""
    import os

    cur = ""
    for part in path.split("/"):
        if not part:
            if not cur:
                cur = "/"
            continue
        cur = cur + part if cur.endswith("/") or not cur else cur + "/" + part
        try:
            os.mkdir(cur)
        except OSError:
            pass
