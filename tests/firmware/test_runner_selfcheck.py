# runs-on: micropython cpython
# The runner itself: a passing case, an assertion helper that must catch a failure.
import sys

from mpytest import raises


def test_interpreter_is_reported():
    assert sys.implementation.name in ("micropython", "cpython")


def test_raises_catches_expected_exception():
    with raises(ValueError):
        int("x")


def test_raises_fails_when_nothing_raised():
    try:
        with raises(ValueError):
            pass
    except AssertionError:
        return
    raise AssertionError("raises() let a silent block pass")
