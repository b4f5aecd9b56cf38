"""The store's revisions, one file each (read by Alembic, not imported by lockerctl)."""
