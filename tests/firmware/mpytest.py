# Small test helpers shared by firmware tests; they run under MicroPython and CPython alike.
import os


class SkipTest(Exception):
    pass


def skip(reason):
    raise SkipTest(reason)


class raises:
    """with raises(ValueError): ...  -- fails unless the block raises that exception."""

    def __init__(self, exc):
        self.exc = exc
        self.value = None

    def __enter__(self):
        return self

    def __exit__(self, typ, value, tb):
        if typ is None:
            raise AssertionError("expected {} to be raised".format(self.exc.__name__))
        if not issubclass(typ, self.exc):
            return False
        self.value = value
        return True


def tmpdir(name):
    """A fresh, empty directory for one test (under $MPYTEST_TMP or /tmp)."""
    base = os.getenv("MPYTEST_TMP") or "/tmp"
    path = "{}/{}".format(base, name)
    rmtree(path)
    _makedirs(path)
    return path


def _makedirs(path):
    cur = ""
    for part in path.split("/"):
        if not part:
            cur = "/"
            continue
        cur = cur + part if cur.endswith("/") else cur + "/" + part
        try:
            os.mkdir(cur)
        except OSError:
            pass


def rmtree(path):
    try:
        entries = os.listdir(path)
    except OSError:
        try:
            os.remove(path)
        except OSError:
            pass
        return
    for e in entries:
        rmtree(path + "/" + e)
    os.rmdir(path)


def fixture(name):
    """A host-made fixture file (tests/firmware/make_fixtures.py), as bytes."""
    base = os.getenv("MPYTEST_FIXTURES") or "/nonexistent"
    try:
        with open(base + "/" + name, "rb") as f:
            return f.read()
    except OSError:
        try:
            with open(base + "/ERROR") as f:
                why = f.read()
        except OSError:
            why = "fixtures were not made"
        raise AssertionError("fixture {} missing: {}".format(name, why))
