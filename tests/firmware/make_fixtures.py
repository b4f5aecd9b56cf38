"""Fixtures the firmware tests need from the host side, made with the host's own encoders (so the
two sides are tested against each other): a signed config bundle for a small school, a newer one,
and signed commands. Run by conftest.py under CPython; the MicroPython tests read the files.

    python tests/firmware/make_fixtures.py OUT_DIR
"""

import json
import sys
from pathlib import Path

from lockerctl.bundle import build_bundle
from lockerctl.commands import sign_command
from lockerctl.timetable import compile_timetable, parse_timetable

SECRET = bytes(range(32))
LOCKER = "L1"
TIMETABLE = """
timezone = "Europe/London"
home_time = "15:15"
y6_release_minutes = 10
uncollected_after_minutes = 60
contact = [["08:45", "10:30"], ["10:45", "12:00"], ["13:00", "15:15"]]
terms = [["2026-09-03", "2026-10-23"], ["2026-11-02", "2026-12-18"]]
closed = ["2026-11-02"]
"""
# (uid, person, role, year, walk_home, revoked)
CARDS = [
    ("04A10001", "P3", "pupil", 3, False, False),
    ("04A10002", "P6W", "pupil", 6, True, False),
    ("04A10003", "P6N", "pupil", 6, False, False),
    ("04A10004", "S1", "staff", 0, False, False),
    ("04A10005", "S2", "staff", 0, False, False),
    ("04A10006", "H1", "slt", 0, False, False),
    ("04A10007", "H1", "staff", 0, False, False),
    ("04A10008", "O1", "office", 0, False, False),
    ("04A10009", "P9", "pupil", 4, False, True),
    ("04A1B2C3D4E5F6", "P7", "pupil", 5, False, False),
]
# 2026-11-24 is a Tuesday in term; grant S2 13:00-14:00 (GMT = UTC) that day: contact time
GRANTS = [{"id": 1, "person": "S2", "from": 1795525200, "until": 1795528800, "by": "H1"}]
FAR = 4000000000
# Everyday exceptions (bundle-rules.bin, v3): the fixture's cards, two visitors' spare cards and
# a rule table. 2026-11-24 is the school day the tests use (GMT: local time is UTC).
DAY = 1795478400  # 2026-11-24 00:00 UTC
VISITOR_CARDS = [
    ("04A1000A", "visitor-1", "visitor", 0, False, False),  # until 17:00 that day
    ("04A1000B", "visitor-2", "visitor", 0, False, False),  # ended the day before
]
RULES = [
    {"kind": "consent", "person": "P3", "by": "H1", "until": 0, "id": 1},
    {
        "kind": "exemption",
        "person": "P6N",
        "by": "H1",
        "category": "medical",
        "from": 20261101,
        "until": 20261130,
        "windows": [[600, 615], [750, 760]],  # 10:00-10:15, 12:30-12:40
        "id": 1,
    },
    {
        "kind": "exemption",
        "person": "P7",
        "by": "H1",
        "category": "young_carer",
        "from": 20261201,  # not yet
        "until": 0,
        "windows": [[600, 615]],
        "id": 2,
    },
    {"kind": "visitor", "person": "visitor-1", "by": "O1", "until": DAY + 17 * 3600, "id": 1},
    {"kind": "visitor", "person": "visitor-2", "by": "O1", "until": DAY - 3600, "id": 2},
]
NOTE = (
    "school.example/classlocker\n1234\nq2XgVwFh8hTqCXdL0RfzsGmPTLyn0Y1Qn8Cq2QxkE3A=\n\n"
    "\u2014 school.example/classlocker 3Qe8qZ9uW1Lw2mYb6v3Jt1S0cXk4+5Zq/7h2y0fJc9a8=\n"
)
NOTE_700 = NOTE + "x" * (700 - len(NOTE.encode()))


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tt = compile_timetable(parse_timetable(TIMETABLE, "fixture.toml"), 1795549393)
    for version in (1, 2):
        data = build_bundle(SECRET, LOCKER, "school", version, 1795549393, tt, CARDS, GRANTS)
        (out / f"bundle-v{version}.bin").write_bytes(data)
    rules = build_bundle(
        SECRET, LOCKER, "school", 3, 1795549393, tt, CARDS + VISITOR_CARDS, GRANTS, RULES
    )
    (out / "bundle-rules.bin").write_bytes(rules)
    other = build_bundle(bytes(32), LOCKER, "school", 3, 1795549393, tt, CARDS, GRANTS)
    (out / "bundle-forged.bin").write_bytes(other)
    cmds = {
        "open_all_1": sign_command(SECRET, LOCKER, 1, "open", "all", "O1", "fire drill", FAR),
        "open_bay1_2": sign_command(SECRET, LOCKER, 2, "open", 1, "O1", "medical", FAR),
        "expired_3": sign_command(SECRET, LOCKER, 3, "open", "all", "O1", "late", 1000),
        "forged_4": sign_command(bytes(32), LOCKER, 4, "open", "all", "O1", "forged", FAR),
        "staff_5": sign_command(SECRET, LOCKER, 5, "open", "staff", "O1", "staff", FAR),
        # the host's signed checkpoint (a C2SP note, at most 700 bytes: opaque to the locker)
        "checkpoint_6": sign_command(SECRET, LOCKER, 6, "checkpoint", 0, "host", NOTE, FAR),
        "checkpoint_long_7": sign_command(
            SECRET, LOCKER, 7, "checkpoint", 0, "host", NOTE_700 + "x", FAR
        ),
        "checkpoint_bay_8": sign_command(SECRET, LOCKER, 8, "checkpoint", 1, "host", NOTE, FAR),
        "checkpoint_by_9": sign_command(SECRET, LOCKER, 9, "checkpoint", 0, "O1", NOTE, FAR),
        "checkpoint_10": sign_command(SECRET, LOCKER, 10, "checkpoint", 0, "host", NOTE_700, FAR),
        "checkpoint_forged_11": sign_command(
            bytes(32), LOCKER, 11, "checkpoint", 0, "host", "forged\n", FAR
        ),
    }
    assert len(cmds["checkpoint_10"]) <= 1024  # max_cmd_bytes: a 700-byte note fits
    (out / "commands.json").write_text(json.dumps({k: v.decode() for k, v in cmds.items()}))
    (out / "secret.hex").write_text(SECRET.hex())
    big_roster(out, tt)


def big_roster(out: Path, tt) -> None:
    """5,000 cards on one locker (bundle v5): the fixture's ten and 4,990 pupils `05xxxxxx`; the
    UIDs of the cards first, in the middle and last in the bundle's table (sorted by hash)."""
    from lockerctl import keys
    from lockerctl.bundle import card_record

    cards = list(CARDS)
    for i in range(5000 - len(CARDS)):
        cards.append((f"05{i:06X}", f"Q{i:04d}", "pupil", 1 + i % 6, i % 2 == 0, False))
    data = build_bundle(SECRET, LOCKER, "school", 5, 1795549393, tt, cards, GRANTS)
    (out / "bundle-5000.bin").write_bytes(data)
    ckey = keys.card_key(SECRET)
    ordered = sorted(cards, key=lambda c: card_record(ckey, c)[:16])
    picks = {"first": ordered[0], "middle": ordered[2500], "last": ordered[-1]}
    picks["near_end_pupil"] = next(c for c in reversed(ordered) if c[2] == "pupil" and not c[5])
    (out / "bundle-5000.json").write_text(
        json.dumps({k: {"uid": c[0], "person": c[1]} for k, c in picks.items()})
    )
    # The same 5,000 cards with 1,000 exceptions (v6): consents for 400 pupils, exemptions for
    # 400 (two windows each) and 200 visitors' cards beside them; the last consented pupil in
    # the rule table (sorted by person) is the one the test taps.
    visitors = [(f"06{i:06X}", f"visitor-{i}", "visitor", 0, False, False) for i in range(200)]
    rules = [
        {"kind": "consent", "person": f"Q{i:04d}", "by": "H1", "until": 0}
        for i in range(1, 800, 2)
    ]
    rules += [
        {
            "kind": "exemption",
            "person": f"Q{i:04d}",
            "by": "H1",
            "category": "send",
            "from": 20260901,
            "until": 0,
            "windows": [[600, 615], [750, 760]],
        }
        for i in range(800, 1200)
    ]
    rules += [{"kind": "visitor", "person": v[1], "by": "O1", "until": FAR} for v in visitors]
    data = build_bundle(
        SECRET, LOCKER, "school", 6, 1795549393, tt, cards + visitors, GRANTS, rules
    )
    (out / "bundle-5000-rules.bin").write_bytes(data)
    consented = sorted(
        (c for c in cards if c[1] in {r["person"] for r in rules if r["kind"] == "consent"}),
        key=lambda c: c[1],
    )[-1]
    flagged = next(c for c in cards if c[1] == "Q0000")  # Year 1, not consented
    (out / "bundle-5000-rules.json").write_text(
        json.dumps(
            {
                "consented": {"uid": consented[0], "person": consented[1]},
                "flagged": {"uid": flagged[0], "person": flagged[1]},
                "visitor": {"uid": visitors[-1][0], "person": visitors[-1][1]},
            }
        )
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
