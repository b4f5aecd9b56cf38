"""No function over 80 lines and no module over 600 lines in the host package.

Read with `ast`: a function (sync or async, methods and nested functions included) is measured
from its `def` line to its last line; a module by its line count. One that has to be longer says
why where it is: a comment `# shape: <reason>` on the line before the `def` (for a module, in its
first 5 lines).

KNOWN holds what another piece of work is reorganising right now, each at its length today: it
may shrink, never grow, and leaves this list when it is done.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "host_tools" / "lockerctl"
MAX_FUNCTION = 80
MAX_MODULE = 600
REASON = "# shape:"

# (path under host_tools/lockerctl, the function's name or None for the module): lines today;
# empty: what is over its limit says why where it is, or is split.
KNOWN: dict[tuple[str, str | None], int] = {}


def _has_reason(lines: list[str], index: int) -> bool:
    """Line `index` (0-based) is a `# shape: <reason>` comment with a reason."""
    if not 0 <= index < len(lines):
        return False
    text = lines[index].strip()
    return text.startswith(REASON) and bool(text[len(REASON) :].strip())


def measure(path: Path) -> list[tuple[str | None, int, int]]:
    """(function name or None for the module, line, length) of everything over its limit in
    `path` that gives no reason."""
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    out: list[tuple[str | None, int, int]] = []
    if len(lines) > MAX_MODULE and not any(_has_reason(lines, i) for i in range(5)):
        out.append((None, 1, len(lines)))
    for node in ast.walk(ast.parse(text, str(path))):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        assert node.end_lineno is not None
        length = node.end_lineno - node.lineno + 1
        if length > MAX_FUNCTION and not _has_reason(lines, node.lineno - 2):
            out.append((node.name, node.lineno, length))
    return out


def offenders() -> tuple[list[str], list[str]]:
    """(lines naming each offender outside KNOWN, lines naming each KNOWN one that grew)."""
    new, grown = [], []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        for name, line, length in measure(path):
            what = f"function {name}" if name else "module"
            limit = MAX_FUNCTION if name else MAX_MODULE
            known = KNOWN.get((rel, name))
            where = f"host_tools/lockerctl/{rel}:{line}: {what} is {length} lines (limit {limit})"
            if known is None:
                new.append(where)
            elif length > known:
                grown.append(f"{where}, grew from {known}")
    return new, grown


def test_no_long_functions_or_modules_without_a_reason():
    new, grown = offenders()
    for line in new + grown:
        print(line)
    split = "split these, or say why on the line before (# shape: <reason>):\n"
    assert not new, split + "\n".join(new)
    assert not grown, "these are being reorganised and must not grow:\n" + "\n".join(grown)


def test_known_entries_still_exist():
    """A KNOWN entry that is no longer over its limit is taken off the list."""
    found = {
        (path.relative_to(PACKAGE).as_posix(), name)
        for path in PACKAGE.rglob("*.py")
        for name, _, _ in measure(path)
    }
    stale = sorted(set(KNOWN) - found, key=str)
    assert not stale, f"no longer over the limit, remove from KNOWN: {stale}"


def test_the_measure(tmp_path):
    body = "\n".join(["    x = 1"] * 80)
    long_def = f"def long():\n{body}\n"
    (tmp_path / "a.py").write_text(long_def)
    assert measure(tmp_path / "a.py") == [("long", 1, 81)]
    (tmp_path / "b.py").write_text(f"# shape: one table, read top to bottom\n{long_def}")
    assert measure(tmp_path / "b.py") == []
    (tmp_path / "c.py").write_text(f"# shape:\n{long_def}")  # a reason must be given
    assert measure(tmp_path / "c.py") == [("long", 2, 81)]
    inner = "\n".join(["        x = 1"] * 80)
    method = f"class K:\n    async def m(self):\n{inner}\n"
    (tmp_path / "d.py").write_text(method)
    assert measure(tmp_path / "d.py") == [("m", 2, 81)]
    (tmp_path / "e.py").write_text("x = 1\n" * 601)
    assert measure(tmp_path / "e.py") == [(None, 1, 601)]
    (tmp_path / "f.py").write_text('"""doc"""\n# shape: generated table\n' + "x = 1\n" * 600)
    assert measure(tmp_path / "f.py") == []
