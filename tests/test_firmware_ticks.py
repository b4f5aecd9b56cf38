"""No firmware module subtracts or orders tick values: a board's `ticks_ms()` wraps at 2^30 ms
(about every 12.4 days), so durations go through `ticks_diff`/`ticks_add` (the wrapping helpers in
locker/bays.py, or `time`'s own). Read with `ast`, as the import checks are.

A tick value is: a call to `ticks_ms`/`ticks_us`/`ticks_cpu`/`ticks_add` (any receiver: `time.`,
`self.board.`, `B.`), a parameter named `now_ms`, and any name or attribute
assigned one of these (followed through assignments, tuples included, until nothing new is found).
Subtracting one (`a - b`, `a -= b`) or ordering two with `<`, `<=`, `>`, `>=` is an offence;
`ticks_diff(a, b)` is a duration, not a tick, and may be compared."""

import ast
from pathlib import Path  # noqa: F401

from test_firmware_imports import FIRMWARE, firmware_files

TICK_CALLS = {"ticks_ms", "ticks_us", "ticks_cpu", "ticks_add"}
TICK_PARAMS = {"now_ms"}
# The wrapping arithmetic itself lives here, and only here: (module, function).
EXEMPT = {("locker/bays.py", "ticks_diff"), ("locker/bays.py", "ticks_add")}


def _callee(node):
    f = node.func
    if isinstance(f, ast.Name):
        return f.id, None
    if isinstance(f, ast.Attribute):
        base = f.value
        return f.attr, base.id if isinstance(base, ast.Name) else None
    return None, None


def _key(node):
    """A name ("x") or an attribute (".x", whatever it hangs on) an assignment can taint."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return "." + node.attr
    return None


class _Ticks:
    def __init__(self, tree):
        self.tree = tree
        self.tainted = set(TICK_PARAMS)
        changed = True
        while changed:
            changed = False
            for node in ast.walk(tree):
                targets, value = self._assignment(node)
                if value is None or not self.is_tick(value):
                    continue
                for t in targets:
                    for leaf in self._leaves(t):
                        k = _key(leaf)
                        if k is not None and k not in self.tainted:
                            self.tainted.add(k)
                            changed = True

    @staticmethod
    def _assignment(node):
        if isinstance(node, ast.Assign):
            return node.targets, node.value
        if isinstance(node, (ast.AnnAssign, ast.AugAssign)) and node.value is not None:
            return [node.target], node.value
        return [], None

    @staticmethod
    def _leaves(t):
        if isinstance(t, (ast.Tuple, ast.List)):
            for e in t.elts:
                yield from _Ticks._leaves(e)
        else:
            yield t

    def is_tick(self, node):
        if isinstance(node, ast.Call):
            name, base = _callee(node)
            return name in TICK_CALLS
        if isinstance(node, ast.Tuple):
            return any(self.is_tick(e) for e in node.elts)
        if isinstance(node, ast.Subscript):
            return self.is_tick(node.value)
        if isinstance(node, ast.IfExp):
            return self.is_tick(node.body) or self.is_tick(node.orelse)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            return self.is_tick(node.left) or self.is_tick(node.right)
        k = _key(node)
        return k is not None and k in self.tainted

    def offences(self, skip=()):
        exempt = set()
        for node in ast.walk(self.tree):
            if isinstance(node, ast.FunctionDef) and node.name in skip:
                exempt.update(id(n) for n in ast.walk(node))
        for node in ast.walk(self.tree):
            if id(node) in exempt:
                continue
            if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Sub):
                if self.is_tick(node.left) or self.is_tick(node.right):
                    yield node.lineno, "subtracts a tick value"
            elif isinstance(node, ast.AugAssign) and isinstance(node.op, ast.Sub):
                if self.is_tick(node.target) or self.is_tick(node.value):
                    yield node.lineno, "subtracts a tick value"
            elif isinstance(node, ast.Compare):
                operands = [node.left, *node.comparators]
                for op, a, b in zip(node.ops, operands, operands[1:], strict=False):
                    if isinstance(op, (ast.Lt, ast.LtE, ast.Gt, ast.GtE)) and (
                        self.is_tick(a) or self.is_tick(b)
                    ):
                        yield node.lineno, "orders tick values"


def offenders(paths, root=FIRMWARE):
    bad = []
    for path in paths:
        rel = path.relative_to(root).as_posix() if path.is_relative_to(root) else path.name
        skip = {fn for module, fn in EXEMPT if module == rel}
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for line, what in _Ticks(tree).offences(skip):
            bad.append(f"{rel}:{line}: {what} (use ticks_diff / ticks_add)")
    return bad


def test_no_firmware_module_subtracts_or_orders_ticks():
    files = list(firmware_files())
    assert any(p.name == "core.py" for p in files) and any(p.name == "bays.py" for p in files)
    assert offenders(files) == []


def test_the_check_catches_what_the_old_code_did(tmp_path):
    """The forms the firmware had before issue 11, and a few more, are all caught."""
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import time\n"
        "class Locker:\n"
        "    def fob(self, now_ms):\n"
        "        if now_ms - self.last[1] <= 3000:\n"  # 4: a parameter
        "            pass\n"
        "        self.until = now_ms + 20000\n"
        "    def expire(self):\n"
        "        now = self.board.ticks_ms()\n"
        "        if now - self.until >= 0:\n"  # 9: assigned from a tick
        "            pass\n"
        "        start, n = time.ticks_ms(), 0\n"
        "        if time.ticks_ms() > start:\n"  # 12: ordered
        "            pass\n"
        "        self.since = start\n"
        "        left = 100\n"
        "        left -= self.since\n"  # 16: augmented
        "    def fine(self, a):\n"
        "        if time.ticks_diff(time.ticks_ms(), self.since) > 5:\n"
        "            return a - 1\n"
        "        return self.until\n"
    )
    found = offenders([bad], root=tmp_path)
    lines = sorted(int(f.split(":")[1]) for f in found)
    assert lines == [4, 9, 12, 16], found


def test_the_old_core_and_bays_are_caught():
    """The arithmetic issue 11 found, as it was written: what the check exists for."""
    old = {
        "core.py": "def _fob(self, card, now, now_ms):\n"
        "    if now_ms - last[1] <= self.settings['double_tap_s'] * 1000:\n"
        "        pass\n"
        "    self.override_until_ms = now_ms + self.settings['override_s'] * 1000\n"
        "def _expire_override(self, now_ms):\n"
        "    if self.override_by is not None and now_ms - self.override_until_ms >= 0:\n"
        "        pass\n",
        "bays.py": "def lapse_due(self, now_ms, lapse_ms):\n"
        "    return now_ms - self.granted_ms >= lapse_ms\n",
    }
    for name, text in old.items():
        tree = ast.parse(text)
        assert list(_Ticks(tree).offences()), name


def test_only_the_two_helpers_are_exempt_and_the_rest_of_their_module_is_checked():
    bays = FIRMWARE / "locker/bays.py"
    tree = ast.parse(bays.read_text())
    defs = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert {"ticks_diff", "ticks_add"} <= defs
    assert list(_Ticks(tree).offences({"ticks_diff", "ticks_add"})) == []
    worse = bays.read_text() + "\ndef lapse(now_ms, t):\n    return now_ms - t > 5\n"
    assert list(_Ticks(ast.parse(worse)).offences({"ticks_diff", "ticks_add"})) != []
