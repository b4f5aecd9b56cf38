# The school's calendar at the locker: UTC -> local time, school days, contact periods, home time.
#
# `spec` is the `timetable` object of the config bundle header (docs/protocol.md), or None when the
# site has no timetable yet (then no day is a school day and nothing is enforced).
#
# Civil-date arithmetic is done here (Howard Hinnant's days-from-civil) rather than with
# time.gmtime/mktime: their epoch is 1970 on the unix port but 2000 on some ESP32 builds.
# Europe/London's rule is built in so a locker whose offset table has run out still gets it right.
try:
    from locker import const
except ImportError:  # the host imports this file as lockerctl.fwcalendar, without the firmware

    def const(x):
        return x


_DAY = const(86400)
_HOUR = const(3600)
_LONDON = const("Europe/London")


def days_from_civil(y, m, d):
    """Days since 1970-01-01 of the proleptic Gregorian date y-m-d."""
    if m <= 2:
        y -= 1
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m - 3 if m > 2 else m + 9) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def civil_from_days(z):
    """(y, m, d) of the day z days after 1970-01-01."""
    z += 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    return (yoe + era * 400 + (1 if m <= 2 else 0), m, d)


def date_int(days):
    """YYYYMMDD of the day `days` after 1970-01-01."""
    y, m, d = civil_from_days(days)
    return y * 10000 + m * 100 + d


def date_days(date):
    """Days since 1970-01-01 of a YYYYMMDD int."""
    return days_from_civil(date // 10000, date // 100 % 100, date % 100)


def weekday(days):
    """0 = Monday .. 6 = Sunday (1970-01-01 was a Thursday)."""
    return (days + 3) % 7


def _last_sunday_0100(y, m):
    # UTC instant of 01:00 UTC on the last Sunday of month m (March or October: 31 days).
    d31 = days_from_civil(y, m, 31)
    return (d31 - (weekday(d31) + 1) % 7) * _DAY + _HOUR


def london_offset(ts):
    """UTC offset in seconds of Europe/London at UTC instant ts (the rule in force since 1996)."""
    y = civil_from_days(ts // _DAY)[0]
    if _last_sunday_0100(y, 3) <= ts < _last_sunday_0100(y, 10):
        return _HOUR
    return 0


class Timetable:
    def __init__(self, spec):
        self.spec = spec
        if spec is None:
            spec = {}
        self.timezone = spec.get("timezone") or "UTC"
        # [[utc_ts, offset], ...] as two flat tuples: a list of 2-lists costs 64 bytes an entry
        # on a 64-bit heap, these 16 (docs/memory.md)
        table = spec.get("offsets") or ()
        self._table = (tuple(row[0] for row in table), tuple(row[1] for row in table))
        self.home_time = spec.get("home_time", 0)
        self.y6_release_minutes = spec.get("y6_release_minutes", 10)
        self.uncollected_after_minutes = spec.get("uncollected_after_minutes", 60)
        self.contact = spec.get("contact") or []
        self.terms = spec.get("terms") or []
        self.closed = spec.get("closed") or []
        self.enforced = self.spec is not None
        self._london = self.timezone == _LONDON

    # -- time of day --------------------------------------------------------------------------

    @property
    def offsets(self):
        """The offset table, [[utc_ts, offset], ...] from the first change on."""
        return [[at, off] for at, off in zip(*self._table)]

    def offset(self, ts):
        """UTC offset (seconds) in force at UTC instant ts."""
        at, offsets = self._table
        n = len(at)
        if self._london and (n == 0 or ts < at[0] or ts >= at[n - 1]):
            return london_offset(ts)
        if n == 0:
            return 0
        if ts < at[0]:
            return offsets[0]
        lo, hi = 0, n - 1  # invariant: at[lo] <= ts; answer in [lo, hi]
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if at[mid] <= ts:
                lo = mid
            else:
                hi = mid - 1
        return offsets[lo]

    def local(self, ts):
        """(date YYYYMMDD, weekday 0=Monday, seconds_of_day, offset) of UTC instant ts."""
        off = self.offset(ts)
        lt = ts + off
        days = lt // _DAY
        return (date_int(days), weekday(days), lt - days * _DAY, off)

    def at_local(self, date, minutes):
        """UTC instant of wall-clock `minutes` after local midnight on `date` (YYYYMMDD).

        On a day the clocks change the offset in force at the resulting instant is used; a wall
        time that falls in the skipped hour maps to the instant an hour later on the old offset,
        and one that occurs twice maps to its first occurrence."""
        wall = date_days(date) * _DAY + minutes * 60
        # Every zone's offset lies within -12 h .. +14 h, so the answer lies in
        # [wall - 14 h, wall + 12 h]: the offsets in force at those two ends are the only
        # candidates (one change at most in a day).
        before = self.offset(wall - 14 * _HOUR)
        after = self.offset(wall + 12 * _HOUR)
        best = None
        for off in (before, after):
            ts = wall - off
            if self.offset(ts) == off and (best is None or ts < best):
                best = ts
        if best is None:  # skipped by a spring-forward change: read on the old offset
            best = wall - before
        return best

    # -- the school's calendar ----------------------------------------------------------------

    def _school_date(self, date, wday):
        if not self.enforced or wday >= 5 or date in self.closed:
            return False
        for start, end in self.terms:
            if start <= date <= end:
                return True
        return False

    def is_school_day(self, ts):
        date, wday, _, _ = self.local(ts)
        return self._school_date(date, wday)

    def in_contact(self, ts):
        date, wday, sod, _ = self.local(ts)
        if not self._school_date(date, wday):
            return False
        for start, end in self.contact:
            if start * 60 <= sod < end * 60:
                return True
        return False

    def home_time_ts(self, ts):
        """UTC instant of home time on the local day of ts, or None when it is not a school day."""
        date, wday, _, _ = self.local(ts)
        if not self._school_date(date, wday):
            return None
        return self.at_local(date, self.home_time)

    def pupil_release_ts(self, ts, early):
        """When a pupil's phone is released today: home time, or y6_release_minutes before it for a
        Year 6 walk-home pupil (`early`). None on a non-school day."""
        home = self.home_time_ts(ts)
        if home is None or not early:
            return home
        return home - self.y6_release_minutes * 60

    def uncollected_ts(self, ts):
        """When a phone still in the locker counts as uncollected today, or None."""
        home = self.home_time_ts(ts)
        if home is None:
            return None
        return home + self.uncollected_after_minutes * 60
