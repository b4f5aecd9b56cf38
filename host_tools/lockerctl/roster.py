"""The roster CSV: import (all or nothing, every bad line reported) and export (UIDs masked).

Bounds checked on import: person_id 1-28 of A-Z a-z 0-9 . _ -; a name of 1-200 characters
without control characters; role pupil, staff, slt or office; year 1-6 for pupils (empty
otherwise); walk_home yes/no, y/n, true/false or 1/0 in any case (empty is no); one year and one
walk_home per person across all their cards; card_uid 8 or 14 hex digits. The export writes a
name a spreadsheet would run as a formula (`=`, `+`, `-`, `@`, tab, carriage return first) with
a leading apostrophe (the export is for reading: its card UIDs are masked).

A file is the whole roster of the site: one row per card, header exactly
`person_id,name,role,year,walk_home,card_uid`. A re-import replaces the roster: cards no longer
listed are removed, a card listed again keeps its revocation (`card revoke` is not undone by a
re-import), people no longer listed are kept, inactive, so their name still shows on old events.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable

from .bounds import BoundError, bad_char, parse_yes_no
from .display import CsvWriter
from .store import PERSON_ID_RE, ROLES, mask_uid

HEADER = ["person_id", "name", "role", "year", "walk_home", "card_uid"]
MAX_NAME = 200
_UID_SEPARATORS = re.compile(r"[\s:.-]")
_HEX = re.compile(r"[0-9A-F]*\Z")


class RosterError(ValueError):
    """A roster file with bad lines: `problems` is [(line, message)], in file order."""

    def __init__(self, source: str, problems: list[tuple[int, str]]):
        self.source = source
        self.problems = problems
        n = len({line for line, _ in problems})
        super().__init__(f"{source}: {n} bad line{'s' if n != 1 else ''}; nothing imported")

    def lines(self) -> list[str]:
        return [f"{self.source}:{line}: {msg}" for line, msg in self.problems]


def normalise_uid(text: str) -> str:
    """A card UID as upper-case hex, 8 or 14 digits (separators `:`, `-`, `.`, spaces dropped);
    ValueError naming what is wrong otherwise."""
    uid = _UID_SEPARATORS.sub("", text or "").upper()
    if not uid:
        raise ValueError("card_uid is empty")
    if not _HEX.match(uid):
        raise ValueError(f"card_uid {text!r} is not hexadecimal")
    if len(uid) not in (8, 14):
        raise ValueError(f"card_uid {text!r} has {len(uid)} hex digits, expected 8 or 14")
    return uid


def _row(values: dict) -> tuple[dict, list[str]]:
    """Validates one row's values; (normalised row, problems)."""
    problems = []
    pid = values["person_id"].strip()
    if not PERSON_ID_RE.match(pid):
        problems.append(f"person_id {pid!r} must be 1-28 of A-Z a-z 0-9 . _ -")
    name = values["name"].strip()
    if not name:
        problems.append("name is empty")
    elif len(name) > MAX_NAME:
        problems.append(f"name is longer than {MAX_NAME} characters")
    elif bad_char(name):
        problems.append(f"name contains {bad_char(name)}")
    role = values["role"].strip().lower()
    if role not in ROLES:
        problems.append(f"role {values['role']!r} must be one of {', '.join(ROLES)}")
    year_text = values["year"].strip()
    year = 0
    if role == "pupil":
        if not year_text.isdigit() or not 1 <= int(year_text) <= 6:
            problems.append(f"year {year_text!r} must be 1-6 for a pupil")
        else:
            year = int(year_text)
    elif year_text not in ("", "0"):
        who = role if role in ROLES else "anyone but a pupil"  # a bad role is reported above
        problems.append(f"year {year_text!r} is for pupils only (leave it empty for {who})")
    try:
        walk_home = bool(parse_yes_no(values["walk_home"]))
    except BoundError:
        problems.append(
            f"walk_home {values['walk_home']!r} must be yes or no (or y/n, true/false, 1/0)"
        )
        walk_home = False
    try:
        uid = normalise_uid(values["card_uid"].strip())
    except ValueError as e:
        problems.append(str(e))
        uid = None
    return (
        {
            "person_id": pid,
            "name": name,
            "role": role,
            "year": year,
            "walk_home": walk_home,
            "card_uid": uid,
        },
        problems,
    )


def _same_person(row: dict, line: int, facts: dict) -> list[str]:
    """One year (over the person's pupil cards) and one walk_home (over all their cards) per
    person: the first card listed decides, a later card that differs is a bad line."""
    errs = []
    seen = facts.setdefault(row["person_id"], {})
    checks = [("walk_home", "yes" if row["walk_home"] else "no")]
    if row["role"] == "pupil":
        checks.append(("year", str(row["year"])))
    for key, value in checks:
        if key not in seen:
            seen[key] = (line, value)
        elif seen[key][1] != value:
            errs.append(
                f"{key} {value} differs from {seen[key][1]} for {row['person_id']} "
                f"(line {seen[key][0]}): one person has one {key} on all their cards"
            )
    return errs


def parse_roster(data: bytes | str, source: str = "roster") -> list[dict]:
    """The validated rows of a roster file, or RosterError listing every bad line."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8-sig")
        except UnicodeDecodeError as e:  # e.object: the bytes
            raise RosterError(
                source, [(e.object[: e.start].count(b"\n") + 1, "not UTF-8 text")]
            ) from None
    elif data.startswith("\ufeff"):
        data = data[1:]
    reader = csv.reader(io.StringIO(data, newline=""))
    problems: list[tuple[int, str]] = []
    try:
        header = next(reader)
    except StopIteration:
        raise RosterError(
            source, [(1, "empty file: expected the header " + ",".join(HEADER))]
        ) from None
    except csv.Error as e:
        raise RosterError(source, [(1, f"not CSV: {e}")]) from None
    if [h.strip().lower() for h in header] != HEADER:
        raise RosterError(
            source, [(1, f"header must be {','.join(HEADER)} (found {','.join(header)!r})")]
        )
    rows: list[dict] = []
    uid_line: dict[str, tuple[int, str]] = {}
    names: dict[str, tuple[int, str]] = {}
    facts: dict[str, dict] = {}
    start = 2
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            problems.append((start, f"not CSV: {e}"))
            break
        line = start
        start = reader.line_num + 1
        if not any(f.strip() for f in fields):
            continue  # blank line
        if len(fields) != len(HEADER):
            problems.append((line, f"{len(fields)} fields, expected {len(HEADER)}"))
            continue
        row, errs = _row(dict(zip(HEADER, fields, strict=True)))
        uid, pid = row["card_uid"], row["person_id"]
        if uid is not None and uid in uid_line:
            other_line, other_pid = uid_line[uid]
            if other_pid == pid:
                errs.append(f"card {uid} is listed twice for {pid} (line {other_line})")
            else:
                errs.append(f"card {uid} is also on {other_pid} (line {other_line})")
        elif uid is not None:
            uid_line[uid] = (line, pid)
        if pid in names and row["name"] and names[pid][1] != row["name"]:
            errs.append(
                f"name {row['name']!r} differs from {names[pid][1]!r} for {pid} "
                f"(line {names[pid][0]})"
            )
        elif row["name"]:
            names.setdefault(pid, (line, row["name"]))
        errs += _same_person(row, line, facts)
        problems.extend((line, e) for e in errs)
        if not errs:
            rows.append(row)
    if problems:
        raise RosterError(source, problems)
    if not rows:
        raise RosterError(
            source,
            [
                (
                    2,
                    "no rows: a roster lists at least one card (an "
                    "import replaces the whole roster)",
                )
            ],
        )
    return rows


def write_roster(rows: Iterable, out) -> int:
    """Writes the roster CSV (same header as the import) with UIDs masked; returns the count."""
    w = CsvWriter(out)
    w.writerow(HEADER)
    n = 0
    for r in rows:
        w.writerow(
            [
                r.person_id,
                r.name,
                r.role,
                r.year if r.role == "pupil" else "",
                "yes" if r.walk_home else "no",
                mask_uid(r.card_uid),
            ]
        )
        n += 1
    return n
