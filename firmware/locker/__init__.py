# classlocker firmware: the locker's logic. Nothing in this package touches hardware; the board
# objects come from hal/.


def unload(name):
    """Drops module `name` from sys.modules and from its package, so that its code is garbage once
    nothing refers to it: for what runs once or rarely (docs/memory.md)."""
    import sys

    sys.modules.pop(name, None)
    package, _, attr = name.rpartition(".")
    parent = sys.modules.get(package)
    if parent is not None and attr in getattr(parent, "__dict__", ()):
        delattr(parent, attr)
