"""The host's store: SQLAlchemy Core on SQLite or PostgreSQL, every read and write the host tools
make. One module per area owns that area's tables' queries (docs/architecture.md, "The store"):

- `engine`: opening, the transactions, the multi-row insert, shared helpers;
- `tables`: every table; `schema`: the migrations, in order;
- `chain`: the trail's rows, verification, redaction, the host's keys;
- `journals`, `ingest`: ingest (one writer, or several workers: `ingest.ingest_shared`);
- `siteconfig`: configuration versions, bundle inputs, settings, broker credentials;
- `devices`: lockers; `roster`: people and cards; `schedule`: timetable and grants;
  `eventlog`: event queries;
- `accounts`, `alerts`, `consents`, `exceptions`, `lookup`, `fleet`, `live`, `tokens`, `privacy`:
  the dashboard's and the office's areas, as functions taking the store.

`Store` is the core areas' methods together (one mixin per module); the other areas are module
functions whose first argument is the store, or a connection when the caller composes several
in one transaction (`Store.transaction`).
"""

from __future__ import annotations

from . import exceptions as _exceptions  # noqa: F401 - every Store's bundles carry its additions
from . import schema
from .chain import TrailMixin
from .devices import LockersMixin
from .engine import StoreError, make_engine, mask_uid
from .eventlog import EventsMixin
from .ingest import IngestMixin
from .journals import REFUSALS, IngestResult, JournalsMixin
from .roster import RosterMixin
from .schedule import ScheduleMixin
from .siteconfig import ConfigMixin
from .tables import EVENT_TEXT, LOCKER_ID_RE, MAX_TEXT, PERSON_ID_RE, ROLES

__all__ = [
    "EVENT_TEXT",
    "LOCKER_ID_RE",
    "MAX_TEXT",
    "PERSON_ID_RE",
    "REFUSALS",
    "ROLES",
    "IngestResult",
    "Store",
    "StoreError",
    "mask_uid",
    "schema",
]


class Store(
    schema.SchemaMixin,
    TrailMixin,
    JournalsMixin,
    IngestMixin,
    ConfigMixin,
    LockersMixin,
    RosterMixin,
    ScheduleMixin,
    EventsMixin,
):
    """The store behind `lockerctl`. Open with `Store.open(url)`."""

    @classmethod
    def open(cls, url: str, migrate: bool = True) -> Store:
        """Connects to `url`, creating a new SQLite file owner-only, and applies migrations."""
        store = cls(make_engine(url))
        if migrate:
            store.migrate()
        return store
