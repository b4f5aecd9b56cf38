# Millisecond ticks that wrap, as on the board: every duration in the firmware goes through here.
#
# An ESP32's `time.ticks_ms()` (any 32-bit port's) wraps at 2^30 ms, about every 12.4 days, so
# two tick values are never subtracted or ordered directly: `diff(a, b)` is how far a is after b
# (negative when before; meaningful within half the period), `add(t, ms)` is the tick `ms` after t.
# The simulated board's counter wraps at 2^30 too, while a 64-bit port's `time.ticks_*` use a far
# longer period and CPython's `time` has none: there (and in the tests on CPython) the same
# arithmetic is done here, modulo 2^30.

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


PERIOD = const(0x40000000)  # 2^30
_MASK = const(0x3FFFFFFF)
_HALF = const(0x20000000)


def wrap(t):
    """Any integer count of milliseconds as a tick value (0 .. 2^30 - 1)."""
    return t & _MASK


def diff(a, b):
    """a - b for tick values, in -2^29 .. 2^29 - 1 (as time.ticks_diff)."""
    return ((a - b + _HALF) & _MASK) - _HALF


def add(t, ms):
    """The tick `ms` milliseconds after t (as time.ticks_add)."""
    return (t + ms) & _MASK


try:  # a port whose own ticks wrap at 2^30 (the ESP32): its native functions, same results
    import time as _time

    if _time.ticks_add(0, -1) == _MASK:
        diff = _time.ticks_diff  # noqa: F811
        add = _time.ticks_add  # noqa: F811
except (ImportError, AttributeError):
    pass
