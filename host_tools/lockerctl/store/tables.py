"""The store's tables (SQLAlchemy Core), every area's, and the limits their columns set.

The tables of `0001_initial` come first; each later one says which migration (`schema.py`)
created it. A change of schema is a new migration, never an edit of a definition here.
"""

from __future__ import annotations

import re

import sqlalchemy as sa

PERSON_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,28}\Z")
LOCKER_ID_RE = PERSON_ID_RE
ROLES = ("pupil", "staff", "slt", "office")
MAX_TEXT = 200
EVENT_TEXT = 255  # an event's text fields: the firmware's limit (bytes of UTF-8, so characters)

metadata = sa.MetaData()

migrations = sa.Table(
    "migrations",
    metadata,
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("applied_at", sa.BigInteger, nullable=False),
)

sites = sa.Table(
    "sites",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("config_version", sa.BigInteger, nullable=False, default=0),
    sa.Column("created_at", sa.BigInteger, nullable=False),
)

people = sa.Table(
    "people",
    metadata,
    sa.Column("site", sa.String(64), sa.ForeignKey("sites.name"), primary_key=True),
    sa.Column("person_id", sa.String(28), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    # The role on the person's first roster row (what an export shows next to the name).
    sa.Column("role", sa.String(16), nullable=False),
    # False once a re-import no longer lists the person: kept so old events still show a name
    # until the retention job removes it.
    sa.Column("active", sa.Boolean, nullable=False, default=True),
)

cards = sa.Table(
    "cards",
    metadata,
    sa.Column("site", sa.String(64), primary_key=True),
    sa.Column("uid", sa.String(14), primary_key=True),  # upper-case hex, 8 or 14 digits
    sa.Column("person_id", sa.String(28), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("year", sa.Integer, nullable=False, default=0),  # 1-6 for pupils, else 0
    sa.Column("walk_home", sa.Boolean, nullable=False, default=False),
    sa.Column("revoked", sa.Boolean, nullable=False, default=False),
    sa.ForeignKeyConstraint(["site", "person_id"], ["people.site", "people.person_id"]),
)

lockers = sa.Table(
    "lockers",
    metadata,
    sa.Column("site", sa.String(64), sa.ForeignKey("sites.name"), primary_key=True),
    sa.Column("id", sa.String(28), primary_key=True),
    sa.Column("bays", sa.Integer, nullable=False),
    sa.Column("board", sa.String(16), nullable=False, default="sim"),
    sa.Column("secret", sa.LargeBinary(32), nullable=False),
    sa.Column("broker_password", sa.String(100), nullable=False),
    sa.Column("cmd_counter", sa.BigInteger, nullable=False, default=0),
    sa.Column("online", sa.Boolean, nullable=True),  # None: never heard from
    sa.Column("last_seen", sa.Float, nullable=True),
    sa.Column("state", sa.JSON, nullable=True),  # the locker's last retained `state`
    sa.Column("control_port", sa.Integer, nullable=True),
    sa.Column("data_dir", sa.String(300), nullable=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
)

timetables = sa.Table(
    "timetables",
    metadata,
    sa.Column("site", sa.String(64), sa.ForeignKey("sites.name"), primary_key=True),
    sa.Column("source", sa.Text, nullable=False),  # the TOML text as given
    sa.Column("parsed", sa.JSON, nullable=False),  # what parse_timetable made of it
    sa.Column("timezone", sa.String(64), nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
)

grants = sa.Table(
    "grants",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("site", sa.String(64), sa.ForeignKey("sites.name"), nullable=False),
    sa.Column("person_id", sa.String(28), nullable=False),
    sa.Column("locker_id", sa.String(28), nullable=True),  # None: every locker of the site
    sa.Column("from_ts", sa.BigInteger, nullable=False),
    sa.Column("until_ts", sa.BigInteger, nullable=False),
    sa.Column("by", sa.String(28), nullable=False),
    sa.Column("reason", sa.String(MAX_TEXT), nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("revoked_at", sa.BigInteger, nullable=True),
    sa.Index("ix_grants_site_until", "site", "until_ts"),
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("site", sa.String(64), nullable=False),
    sa.Column("locker_id", sa.String(28), nullable=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("ts", sa.BigInteger, nullable=True),  # None: the locker's clock was not trusted
    sa.Column("type", sa.String(32), nullable=False),
    sa.Column("bay", sa.Integer, nullable=True),
    # up to the firmware's 255 bytes of text (0005 widened them from 200 on PostgreSQL)
    sa.Column("person", sa.String(EVENT_TEXT), nullable=True),
    sa.Column("by", sa.String(EVENT_TEXT), nullable=True),
    sa.Column("reason", sa.String(EVENT_TEXT), nullable=True),
    sa.Column("received_at", sa.BigInteger, nullable=False),
    # `ts`, or `received_at` when the ts is unknown: what exports order and filter by.
    sa.Column("sort_ts", sa.BigInteger, nullable=False),
    # Migration 0005 (`_m0005_journal_ids` adds them to older stores): the locker's journal id
    # ("" for events stored before it), the event's MAC, whether its type is one no firmware
    # version knows, and the format of its trail content (0 before 0005, 2 since).
    sa.Column("jid", sa.String(16), nullable=False, server_default=""),
    sa.Column("mac", sa.String(32), nullable=True),
    sa.Column("unknown_type", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("hash_v", sa.SmallInteger, nullable=False, server_default="0"),
    sa.UniqueConstraint("site", "locker_id", "jid", "seq", name="uq_events_site_locker_jid_seq"),
    sa.Index("ix_events_site_sort", "site", "sort_ts"),
    sa.Index("ix_events_site_person", "site", "person"),
)

# Per locker: the acknowledged watermark and the duplicates counted (events from lockers that
# are not (yet) registered are still stored, so this is not a column of `lockers`).
ingest_marks = sa.Table(
    "ingest_marks",
    metadata,
    sa.Column("site", sa.String(64), primary_key=True),
    sa.Column("locker_id", sa.String(28), primary_key=True),
    sa.Column("ack_seq", sa.BigInteger, nullable=False, default=0),
    sa.Column("duplicates", sa.BigInteger, nullable=False, default=0),
)

trail_entries = sa.Table(
    "trail",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("site", sa.String(64), nullable=False),
    sa.Column("kind", sa.String(8), nullable=False),  # "event" or "action"
    sa.Column("event_id", sa.Integer, nullable=True),  # events.id for kind "event"
    sa.Column("content", sa.Text, nullable=True),  # canonical JSON for kind "action"
    sa.Column("content_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
    sa.Column("redacted", sa.Boolean, nullable=False, default=False),
    sa.Column("at", sa.BigInteger, nullable=False),
    sa.Index("ix_trail_event", "event_id"),
)

# One row (id 1): the last entry written. Read FOR UPDATE to serialise appends; compared by
# `audit verify` to catch a truncated tail.
trail_head = sa.Table(
    "trail_head",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("last_id", sa.BigInteger, nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
)

broker_accounts = sa.Table(
    "broker_accounts",
    metadata,
    sa.Column("site", sa.String(64), sa.ForeignKey("sites.name"), primary_key=True),
    sa.Column("user", sa.String(100), nullable=False),
    sa.Column("password", sa.String(200), nullable=False),
)

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("site", sa.String(64), nullable=False),
    sa.Column("username", sa.String(64), nullable=False),
    sa.Column("password_hash", sa.String(300), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),  # office, slt, admin
    sa.Column("person_id", sa.String(28), nullable=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("disabled", sa.Boolean, nullable=False, default=False),
    sa.UniqueConstraint("site", "username", name="uq_users_site_username"),
)


# One row per redacted trail entry (migration 0003_redactions): the hash of what stays of it
# (`trail.public_content`) and the `redact` action whose digest covers it.
redactions = sa.Table(
    "redactions",
    metadata,
    sa.Column("entry_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("public_hash", sa.String(64), nullable=False),
    sa.Column("action_id", sa.BigInteger, nullable=False),
)


# How far each locker's clock is from the host's (migration 0004_locker_clocks): `offset_s` is the
# locker's time minus the host's, in seconds, as `lockerctl serve` measured it from the locker's
# latest live `state` (its `time` against the moment it arrived), at `checked_at` (host time).
locker_clocks = sa.Table(
    "locker_clocks",
    metadata,
    sa.Column("site", sa.String(64), primary_key=True),
    sa.Column("locker_id", sa.String(28), primary_key=True),
    sa.Column("offset_s", sa.Float, nullable=False),
    sa.Column("checked_at", sa.Float, nullable=False),
)


# Migration 0005: events are told apart by (locker, journal id, seq); the watermark is kept per
# journal; what ingest refused and what conflicted is kept; the host's checkpoint key.
journal_marks = sa.Table(
    "journal_marks",
    metadata,
    sa.Column("site", sa.String(64), primary_key=True),
    sa.Column("locker_id", sa.String(28), primary_key=True),
    sa.Column("jid", sa.String(16), primary_key=True),
    sa.Column("ack_seq", sa.BigInteger, nullable=False, default=0),
    sa.Column("duplicates", sa.BigInteger, nullable=False, default=0),
)

# An event whose (locker, jid, seq) was already stored with other content: kept here, never
# stored over the first nor acknowledged. One row per distinct content, `count` its arrivals.
event_conflicts = sa.Table(
    "event_conflicts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("site", sa.String(64), nullable=False),
    sa.Column("locker_id", sa.String(28), nullable=False),
    sa.Column("jid", sa.String(16), nullable=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("event_id", sa.Integer, nullable=True),  # the row stored first
    sa.Column("content", sa.Text, nullable=False),  # the event received, canonical JSON
    sa.Column("content_hash", sa.String(64), nullable=False),
    sa.Column("first_at", sa.BigInteger, nullable=False),
    sa.Column("last_at", sa.BigInteger, nullable=False),
    sa.Column("count", sa.BigInteger, nullable=False, default=1),
    sa.UniqueConstraint(
        "site", "locker_id", "jid", "seq", "content_hash", name="uq_event_conflicts"
    ),
)

# What ingest refused or found wrong, per locker and kind (`REFUSALS`): an urgent alert each.
# At most one new row per (locker, kind) every `REFUSAL_ALERT_EVERY` seconds; arrivals within
# that add to the row's `count`, so a flood of forgeries is one alert with a count.
ingest_refusals = sa.Table(
    "ingest_refusals",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("site", sa.String(64), nullable=False),
    sa.Column("locker_id", sa.String(28), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("first_at", sa.BigInteger, nullable=False),
    sa.Column("last_at", sa.BigInteger, nullable=False),
    sa.Column("count", sa.BigInteger, nullable=False, default=1),
    sa.Column("detail", sa.String(300), nullable=False, default=""),
    sa.Index("ix_ingest_refusals_site_locker", "site", "locker_id", "kind", "first_at"),
)


# The host's own keys (one row per purpose; `checkpoint`: the Ed25519 key that signs the trail's
# checkpoints). Kept with the lockers' secrets, in the store; the private key never leaves it.
host_keys = sa.Table(
    "host_keys",
    metadata,
    sa.Column("name", sa.String(32), primary_key=True),
    sa.Column("private_key", sa.LargeBinary(64), nullable=False),
    sa.Column("public_key", sa.LargeBinary(64), nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
)


# When each site's configuration version was last set (migration 0007_config_changes): an online
# locker still running an older version two minutes after it is an alert.
config_changes = sa.Table(
    "config_changes",
    metadata,
    sa.Column("site", sa.String(64), primary_key=True),
    sa.Column("version", sa.BigInteger, nullable=False),
    sa.Column("changed_at", sa.BigInteger, nullable=False),
)


# A site's remembered settings (migration 0008_settings): e.g. the broker's address given to
# `broker config --listen`, which later commands use unless told otherwise. Values are text.
settings = sa.Table(
    "settings",
    metadata,
    sa.Column("site", sa.String(64), primary_key=True),
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(1000), nullable=False),
)


# The dashboard's sessions and acknowledgements (migration 0002_dashboard).
web_sessions = sa.Table(
    "web_sessions",
    metadata,
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column("site", sa.String(64), nullable=False),
    sa.Column("user_id", sa.Integer, nullable=False),
    sa.Column("csrf", sa.String(64), nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("expires_at", sa.BigInteger, nullable=False),
    sa.Index("ix_web_sessions_user", "user_id"),
)

alert_acks = sa.Table(
    "alert_acks",
    metadata,
    sa.Column("site", sa.String(64), primary_key=True),
    sa.Column("alert", sa.String(120), primary_key=True),  # e.g. "event:42", "offline:L1"
    sa.Column("by", sa.String(64), nullable=False),  # the account's username
    sa.Column("at", sa.BigInteger, nullable=False),
)


# Consents, exemptions and visitors (migration 0010_exceptions).
consents = sa.Table(
    "consents",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("site", sa.String(64), nullable=False),
    sa.Column("person_id", sa.String(28), nullable=False),
    sa.Column("by", sa.String(28), nullable=False),
    sa.Column("reason", sa.String(MAX_TEXT), nullable=True),
    sa.Column("until_date", sa.String(10), nullable=True),  # YYYY-MM-DD, last day; None: none
    sa.Column("until_ts", sa.BigInteger, nullable=True),  # the instant it ends (after that day)
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("ended_at", sa.BigInteger, nullable=True),
    sa.Index("ix_consents_site_person", "site", "person_id"),
)

exemptions = sa.Table(
    "exemptions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("site", sa.String(64), nullable=False),
    sa.Column("person_id", sa.String(28), nullable=False),
    sa.Column("category", sa.String(16), nullable=False),  # a category, never a diagnosis
    sa.Column("windows", sa.String(100), nullable=False),  # "HH:MM-HH:MM,HH:MM-HH:MM"
    sa.Column("by", sa.String(28), nullable=False),
    sa.Column("review_date", sa.String(10), nullable=False),
    sa.Column("from_date", sa.String(10), nullable=False),
    sa.Column("until_date", sa.String(10), nullable=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("ended_at", sa.BigInteger, nullable=True),
    sa.Index("ix_exemptions_site", "site", "ended_at"),
)

visitors = sa.Table(
    "visitors",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("site", sa.String(64), nullable=False),
    sa.Column("person_id", sa.String(28), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("card_uid", sa.String(14), nullable=False),
    sa.Column("by", sa.String(28), nullable=False),
    sa.Column("from_ts", sa.BigInteger, nullable=False),
    sa.Column("until_ts", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Index("ix_visitors_site_until", "site", "until_ts"),
)


# Alerts' notes and the mail queue (migrations 0011_alerts_mail, 0016_mail_seen).
MAX_NOTE = 200

alert_notes = sa.Table(
    "alert_notes",
    metadata,
    sa.Column("site", sa.String(64), primary_key=True),
    sa.Column("alert", sa.String(120), primary_key=True),
    sa.Column("note", sa.String(MAX_NOTE), nullable=False),
)

mail_outbox = sa.Table(
    "mail_outbox",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("site", sa.String(64), nullable=False),
    sa.Column("fold_key", sa.String(200), nullable=False),  # kind|locker|bay, review|date
    sa.Column("alert", sa.String(120), nullable=False),  # the alert's key ("" for a review)
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("locker_id", sa.String(28), nullable=True),
    sa.Column("bay", sa.Integer, nullable=True),
    sa.Column("subject", sa.String(300), nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("recipients", sa.String(2000), nullable=False),  # comma-separated
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("next_try_at", sa.BigInteger, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("sent_at", sa.BigInteger, nullable=True),
    sa.Column("last_error", sa.String(300), nullable=True),
    sa.Column("repeats", sa.Integer, nullable=False, default=0),
    sa.Index("ix_mail_outbox_due", "site", "sent_at", "next_try_at"),
    sa.Index("ix_mail_outbox_fold", "site", "fold_key", "created_at"),
)

mail_marks = sa.Table(
    "mail_marks",
    metadata,
    sa.Column("site", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.BigInteger, nullable=False),
)

mail_conditions = sa.Table(
    "mail_conditions",
    metadata,
    sa.Column("site", sa.String(64), primary_key=True),
    sa.Column("alert", sa.String(120), primary_key=True),
    sa.Column("since", sa.BigInteger, nullable=False),
)

mail_seen = sa.Table(
    "mail_seen",
    metadata,
    sa.Column("site", sa.String(64), primary_key=True),
    sa.Column("alert", sa.String(120), primary_key=True),
    sa.Column("at", sa.BigInteger, nullable=False),  # when the host received it
    sa.Index("ix_mail_seen_at", "site", "at"),
)

RECEIVED_INDEX = sa.Index("ix_events_site_received", events.c.site, events.c.received_at)


# Firmware offered to each locker (migration 0012_firmware_offers).
firmware_offers = sa.Table(
    "firmware_offers",
    metadata,
    sa.Column("site", sa.String(64), primary_key=True),
    sa.Column("locker_id", sa.String(64), primary_key=True),
    sa.Column("version", sa.String(40), nullable=False),
    sa.Column("files", sa.Integer, nullable=False),
    sa.Column("bytes", sa.Integer, nullable=False),
    sa.Column("offered_at", sa.BigInteger, nullable=False),
    sa.Column("actor", sa.String(120), nullable=False),
)


# The JSON API's tokens (migration 0014_api_tokens).
MAX_LABEL = 64

api_tokens = sa.Table(
    "api_tokens",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("site", sa.String(64), nullable=False),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("username", sa.String(64), nullable=False),
    sa.Column("label", sa.String(MAX_LABEL), nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("created_by", sa.String(80), nullable=False),
    sa.Column("last_used_at", sa.BigInteger, nullable=True),
    sa.Index("ix_api_tokens_user", "site", "username"),
)


# Who may approve keep-safe consents: the Headteacher and the SLT members an admin names
# (`lockerctl consent approver add`). A row is an approver; removing one deletes its row (the
# trail keeps the history: `consent_approver_add` / `consent_approver_remove` actions).
consent_approvers = sa.Table(
    "consent_approvers",
    metadata,
    sa.Column("site", sa.String(64), primary_key=True),
    sa.Column("person_id", sa.String(28), primary_key=True),
    sa.Column("added_by", sa.String(MAX_TEXT), nullable=False),  # the actor who named them
    sa.Column("added_at", sa.BigInteger, nullable=False),
)
