"""Nothing outside the store (`host_tools/lockerctl/store/`, and its schema's history in
`migrations/`, Alembic's revisions) writes SQL or touches the store's
private names: read with `ast`, not by importing.

A module outside the store may not import `sqlalchemy`, may not import a name starting with `_`
from the store, and may not use an attribute starting with `_` of a store object (a name bound
to a store module, or a variable called `store`/`st`, or an attribute `.store`). The few
exceptions are listed in `ALLOWED`, each with its reason.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "host_tools" / "lockerctl"
STORE_PACKAGES = ("store", "migrations")  # the store, and the history of its schema
STORE_NAMES = {"store", "st"}  # how a Store object is named outside the store

# (module path relative to lockerctl/, what) -> why it may
ALLOWED: dict[tuple[str, str], str] = {
    ("backup.py", "import sqlalchemy"): "copies whole databases (SQLite's online backup, a"
    " REPEATABLE READ snapshot of PostgreSQL) below the level of any area's queries",
}


def _module_name(path: Path, package: Path) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(importer: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = importer.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _in_store(name: str) -> bool:
    return name == "lockerctl.store" or name.startswith("lockerctl.store.")


def violations(path: Path, package: Path = PACKAGE) -> list[str]:
    """What `path` (a module of `package`) does that only the store may."""
    tree = ast.parse(path.read_text(), str(path))
    me = _module_name(path, package)
    is_package = path.name == "__init__.py"
    store_aliases: set[str] = set()
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "sqlalchemy":
                    found.append("import sqlalchemy")
                if _in_store(a.name):
                    store_aliases.add(a.asname or a.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            src = _resolve(me, is_package, node)
            if src.split(".")[0] == "sqlalchemy":
                found.append("import sqlalchemy")
            for a in node.names:
                full = f"{src}.{a.name}"
                if _in_store(src) and a.name.startswith("_"):
                    found.append(f"from {src} import {a.name}")
                if _in_store(full) or (src == "lockerctl" and a.name == "store"):
                    store_aliases.add(a.asname or a.name)
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        attr = node.attr
        if not attr.startswith("_") or attr.startswith("__"):
            continue
        v = node.value
        owner = v.id if isinstance(v, ast.Name) else getattr(v, "attr", None)
        if owner in store_aliases or owner in STORE_NAMES:
            found.append(f"{owner}.{attr}")
    return sorted(set(found))


def outside_store() -> list[Path]:
    return [
        p
        for p in sorted(PACKAGE.rglob("*.py"))
        if "__pycache__" not in p.parts
        and not any(PACKAGE / name in p.parents for name in STORE_PACKAGES)
    ]


def test_nothing_outside_the_store_writes_sql_or_uses_its_private_names():
    bad = []
    used = set()
    for path in outside_store():
        rel = str(path.relative_to(PACKAGE))
        for what in violations(path):
            key = (rel, what)
            if key in ALLOWED:
                used.add(key)
            else:
                bad.append(f"{rel}: {what}")
    assert not bad, "outside the store:\n" + "\n".join(bad)
    assert used == set(ALLOWED), f"allowed but no longer needed: {set(ALLOWED) - used}"


def test_every_allowed_exception_has_a_reason():
    for key, reason in ALLOWED.items():
        assert reason.strip(), key


def test_the_check_finds_what_it_looks_for(tmp_path):
    """The checker itself: each kind of breach is found."""
    probe = tmp_path / "lockerctl" / "probe.py"
    probe.parent.mkdir()
    probe.write_text(
        "import sqlalchemy as sa\n"
        "from .store.chain import _append_action\n"
        "from .store import engine as E\n"
        "def f(store, c):\n"
        "    with store._write():\n"
        "        c.store._read()\n"
        "    E._now()\n"
    )
    assert violations(probe, tmp_path / "lockerctl") == [
        "E._now",
        "from lockerctl.store.chain import _append_action",
        "import sqlalchemy",
        "store._read",
        "store._write",
    ]
