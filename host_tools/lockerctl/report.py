"""The policy report (`lockerctl report --from DATE --to DATE [--format html|csv] [-o FILE]`): how
the phone policy was applied, for SLT, governors and an inspector.

Figures, per school day and per year group (`Year 1`...`Year 6`, `Staff`, `Visitors`, and
`No one` for an incident at an empty bay):

- `deposits`: phones deposited (`deposit`);
- `late_collections`: phones collected after home time + `uncollected_after_minutes` (the
  moment a phone counts as uncollected), on a school day;
- `policy_flags`: deposits by a pupil who may not bring a phone (`policy_flag`);
- `overrides`: bays opened with an SLT fob (`override`);
- `grants`: phones released under an exception grant (`retrieve` with reason `grant`);
- `exemptions`: phones collected under an exemption (`retrieve` with reason `exemption`);
- `incidents`: doors forced or left open, emergency opens (`door_forced`, `door_left_open`,
  `emergency_open`);

and per locker: deposits per bay, and alerts (the alert events of `alerts.EVENT_ALERTS` and the
events ingest refused). An event counts on the local day it happened (the locker's clock; the
host's receipt time when the locker's clock was not set). The days listed are the timetable's
school days in the range (weekdays without a timetable) and any other day that had events.
Charts: deposits per day, incidents per week (`svgchart.py`, SVG drawn on the server).

The HTML is one self-contained file (no script; print CSS for A4, so a browser's *Print* or
*Save as PDF* gives a clean document); the CSV has the same figures, one row per day and year
group (`section` `day`), per day (`day_total`), per week (`week`), per bay (`bay`) and per
locker (`locker`).
"""

from __future__ import annotations

import datetime as dt
import io
from collections import Counter
from dataclasses import dataclass, field
from html import escape
from zoneinfo import ZoneInfo

from . import alerts
from .display import CsvWriter
from .export import local_day_start
from .store import alerts as store_alerts
from .svgchart import bar_chart

MEASURES = (
    "deposits",
    "late_collections",
    "policy_flags",
    "overrides",
    "grants",
    "exemptions",
    "incidents",
)
LABELS = {
    "deposits": "Phones deposited",
    "late_collections": "Collected late",
    "policy_flags": "Policy flags",
    "overrides": "SLT fob opens",
    "grants": "Grants used",
    "exemptions": "Exemptions used",
    "incidents": "Incidents",
}
INCIDENTS = ("door_forced", "door_left_open", "emergency_open")
TYPES = ("deposit", "retrieve", "policy_flag", "override", *INCIDENTS, *alerts.EVENT_ALERTS)
MAX_DAYS = 400
CSV_HEADER = ["section", "day", "group", "locker", "bay", *MEASURES, "alerts"]


@dataclass
class Report:
    site: str
    timezone: str
    first: dt.date
    last: dt.date
    days: list[dt.date] = field(default_factory=list)
    school_days: set[dt.date] = field(default_factory=set)
    groups: list[str] = field(default_factory=list)
    cells: dict[tuple[dt.date, str], Counter] = field(default_factory=dict)
    bays: dict[tuple[str, int], int] = field(default_factory=dict)
    locker_alerts: Counter = field(default_factory=Counter)
    locker_deposits: Counter = field(default_factory=Counter)

    def day_total(self, day: dt.date) -> Counter:
        total: Counter = Counter()
        for g in self.groups:
            total.update(self.cells.get((day, g), Counter()))
        return total

    def total(self) -> Counter:
        total: Counter = Counter()
        for c in self.cells.values():
            total.update(c)
        return total

    def weeks(self) -> list[tuple[dt.date, Counter]]:
        out: dict[dt.date, Counter] = {}
        day = self.first - dt.timedelta(days=self.first.weekday())
        while day <= self.last:
            out[day] = Counter()
            day += dt.timedelta(days=7)
        for d in self.days:
            out[d - dt.timedelta(days=d.weekday())].update(self.day_total(d))
        return sorted(out.items())


def _group(role: str | None, year: int) -> str:
    if role == "pupil":
        return f"Year {year}" if year else "Pupils (no year)"
    if role in ("staff", "slt", "office"):
        return "Staff"
    if role == "visitor":
        return "Visitors"
    return "No one"


def _group_order(g: str) -> tuple:
    if g.startswith("Year "):
        return (0, int(g[5:]))
    return (1, ["Pupils (no year)", "Staff", "Visitors", "No one"].index(g), 0)


def build(store, site: str, first: dt.date, last: dt.date) -> Report:
    """The report's figures for local dates first..last (inclusive); ValueError for a range
    that is backwards or longer than MAX_DAYS."""
    if last < first:
        raise ValueError(f"--from {first} is after --to {last}")
    if (last - first).days + 1 > MAX_DAYS:
        raise ValueError(f"at most {MAX_DAYS} days in one report")
    timezone = store.timezone(site)
    zone = ZoneInfo(timezone)
    start = local_day_start(first, timezone)
    end = local_day_start(last + dt.timedelta(days=1), timezone)
    row = store.timetable(site)
    cal = alerts.calendar(row, start)
    rep = Report(site, timezone, first, last)
    day = first
    while day <= last:
        noon = local_day_start(day, timezone) + 12 * 3600
        if cal.is_school_day(noon) if row is not None else day.weekday() < 5:
            rep.school_days.add(day)
        day += dt.timedelta(days=1)
    year_of = store_alerts.years(store, site)
    roles = store_alerts.people_roles(store, site)
    groups: set[str] = set()
    days: set[dt.date] = set(rep.school_days)
    for r in store_alerts.day_events(store, site, start, end, TYPES):
        local = dt.datetime.fromtimestamp(r.sort_ts, zone).date()
        role = r.role if r.person else None
        if r.person and role is None and r.person in roles:
            role = roles[r.person][1]
        group = _group(role, year_of.get(r.person or "", 0))
        measure = None
        t = r.type
        if t == "deposit":
            measure = "deposits"
            rep.locker_deposits[r.locker_id] += 1
            if r.bay is not None:
                key = (r.locker_id, int(r.bay))
                rep.bays[key] = rep.bays.get(key, 0) + 1
        elif t == "retrieve":
            if r.reason == "grant":
                measure = "grants"
            elif r.reason == "exemption":
                measure = "exemptions"
            else:
                late = cal.uncollected_ts(r.sort_ts) if row is not None else None
                if late is not None and r.sort_ts >= late:
                    measure = "late_collections"
        elif t == "policy_flag":
            measure = "policy_flags"
        elif t == "override":
            measure = "overrides"
        elif t in INCIDENTS:
            measure = "incidents"
        if t in alerts.EVENT_ALERTS:
            rep.locker_alerts[r.locker_id] += 1
        if measure is None:
            continue
        days.add(local)
        groups.add(group)
        rep.cells.setdefault((local, group), Counter())[measure] += 1
    for locker, n in store_alerts.refusal_counts_by_locker(store, site, start, end).items():
        rep.locker_alerts[locker] += n
    for locker in store.lockers(site):
        rep.locker_alerts.setdefault(locker.id, 0)
        rep.locker_deposits.setdefault(locker.id, 0)
    rep.days = sorted(days)
    rep.groups = sorted(groups, key=_group_order)
    return rep


# -- CSV -------------------------------------------------------------------------------------


def to_csv(rep: Report) -> str:
    out = io.StringIO()
    w = CsvWriter(out)
    w.writerow(CSV_HEADER)
    for day in rep.days:
        for g in rep.groups:
            c = rep.cells.get((day, g))
            if c:
                w.writerow(["day", day.isoformat(), g, "", "", *[c[m] for m in MEASURES], ""])
    for day in rep.days:
        c = rep.day_total(day)
        w.writerow(["day_total", day.isoformat(), "", "", "", *[c[m] for m in MEASURES], ""])
    for monday, c in rep.weeks():
        w.writerow(["week", monday.isoformat(), "", "", "", *[c[m] for m in MEASURES], ""])
    for (locker, bay), n in sorted(rep.bays.items()):
        w.writerow(["bay", "", "", locker, bay, n, *[""] * (len(MEASURES) - 1), ""])
    for locker in sorted(rep.locker_alerts):
        deposits = rep.locker_deposits.get(locker, 0)
        blanks = [""] * (len(MEASURES) - 1)
        w.writerow(["locker", "", "", locker, "", deposits, *blanks, rep.locker_alerts[locker]])
    return out.getvalue()


# -- HTML ------------------------------------------------------------------------------------

CSS = """
body { font-family: system-ui, sans-serif; color: #111; margin: 1.5rem; max-width: 60rem; }
h1 { font-size: 1.5rem; margin: 0 0 .25rem; } h2 { font-size: 1.15rem; margin-top: 1.5rem; }
p.meta { color: #444; margin: 0 0 1rem; }
table { border-collapse: collapse; margin: .5rem 0 1rem; font-size: .85rem; }
th, td { border: 1px solid #bbb; padding: .2rem .45rem; text-align: right; }
th:first-child, td:first-child, th.g, td.g { text-align: left; white-space: nowrap; }
thead th { background: #eef2f5; }
tr.total td { font-weight: 600; background: #f6f6f6; }
td.off { color: #777; }
figure { margin: .5rem 0 1rem; } figcaption { font-size: .85rem; color: #444; }
svg.chart { max-width: 40rem; height: auto; }
@page { size: A4 portrait; margin: 15mm 12mm; }
@media print {
  body { margin: 0; max-width: none; font-size: 10pt; }
  table { font-size: 8.5pt; page-break-inside: auto; }
  tr, figure { page-break-inside: avoid; }
  thead { display: table-header-group; }
  h2 { page-break-after: avoid; }
  section.page { page-break-before: always; }
  thead th, tr.total td { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
}
"""


def _table(head: list[str], rows: list[list], total: list | None = None, cls="") -> str:
    h = "".join(f'<th scope="col">{escape(str(x))}</th>' for x in head)
    body = []
    for r in rows:
        first, rest = r[0], r[1:]
        cells = "".join(f"<td>{escape(str(x))}</td>" for x in rest)
        body.append(f'<tr><th scope="row" class="g">{escape(str(first))}</th>{cells}</tr>')
    if total is not None:
        cells = "".join(f"<td>{escape(str(x))}</td>" for x in total)
        body.append(f'<tr class="total">{cells}</tr>')
    return (
        f'<table class="{cls}"><thead><tr>{h}</tr></thead><tbody>{"".join(body)}</tbody></table>'
    )


def charts(rep: Report) -> tuple[str, str]:
    days = rep.days
    deposits = bar_chart(
        "Phones deposited per day",
        [d.strftime("%a %d %b") for d in days],
        [rep.day_total(d)["deposits"] for d in days],
        " phones",
    )
    weeks = rep.weeks()
    incidents = bar_chart(
        "Incidents per week",
        [f"w/c {m.strftime('%d %b')}" for m, _ in weeks],
        [c["incidents"] for _, c in weeks],
        " incidents",
    )
    return deposits, incidents


def body_html(rep: Report) -> str:
    """The report's content (no <html>/<head>): for the file and for the dashboard's page."""
    total = rep.total()
    deposits_svg, incidents_svg = charts(rep)
    parts = [
        f"<h1>Phone policy report: {escape(rep.site)}</h1>",
        f'<p class="meta">{rep.first:%A %d %B %Y} to {rep.last:%A %d %B %Y} · '
        f"{len(rep.school_days)} school days · times in {escape(rep.timezone)}</p>",
        "<h2>Summary</h2>",
        _table(["Measure", "Total"], [[LABELS[m], total[m]] for m in MEASURES], cls="summary"),
        '<figure class="deposits">',
        deposits_svg,
        "<figcaption>Phones deposited per day (figures in the table below).</figcaption>",
        "</figure>",
        '<figure class="incidents">',
        incidents_svg,
        "<figcaption>Doors forced or left open and emergency opens, per week.</figcaption>",
        "</figure>",
        "<h2>Per day</h2>",
    ]
    rows = []
    for d in rep.days:
        c = rep.day_total(d)
        label = d.strftime("%a %d %b") + ("" if d in rep.school_days else " (not a school day)")
        rows.append([label, *[c[m] for m in MEASURES]])
    parts.append(
        _table(
            ["Day", *[LABELS[m] for m in MEASURES]],
            rows,
            ["Total", *[total[m] for m in MEASURES]],
            cls="days",
        )
    )
    parts.append('<section class="page"><h2>Per year group</h2>')
    group_rows = []
    for g in rep.groups:
        sums: Counter = Counter()
        for d in rep.days:
            sums.update(rep.cells.get((d, g), Counter()))
        group_rows.append([g, *[sums[m] for m in MEASURES]])
    parts.append(_table(["Group", *[LABELS[m] for m in MEASURES]], group_rows, cls="groups"))
    parts.append("<h2>Per day and year group</h2>")
    detail = []
    for d in rep.days:
        for g in rep.groups:
            cell = rep.cells.get((d, g))
            if cell:
                detail.append([f"{d:%a %d %b} · {g}", *[cell[m] for m in MEASURES]])
    parts.append(_table(["Day · group", *[LABELS[m] for m in MEASURES]], detail, cls="day-groups"))
    parts.append("</section><h2>Per locker</h2>")
    lockers = sorted(rep.locker_alerts)
    parts.append(
        _table(
            ["Locker", "Phones deposited", "Alerts"],
            [[x, rep.locker_deposits.get(x, 0), rep.locker_alerts[x]] for x in lockers],
            cls="lockers",
        )
    )
    parts.append("<h2>Bay use</h2>")
    parts.append(
        _table(
            ["Locker · bay", "Phones deposited"],
            [[f"{loc} bay {bay}", n] for (loc, bay), n in sorted(rep.bays.items())],
            cls="bays",
        )
    )
    return "".join(parts)


def to_html(rep: Report) -> str:
    """A self-contained HTML document (no script; print CSS for A4)."""
    title = f"Phone policy report {rep.first} to {rep.last}"
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body>"
        f"{body_html(rep)}</body></html>\n"
    )
