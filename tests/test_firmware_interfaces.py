"""One interface between the firmware's parts, read from the source with `ast`: everything the link
(firmware/locker/link.py) uses of its locker is something `locker.core.Locker` has, and the link
tests' stand-in (tests/firmware/link_scenarios.py) has exactly those names too, so the link has no
branch for a locker that differs. Likewise every board method the locker, the app and the sim
board's control port call exists on both boards."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE = ROOT / "firmware"


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), str(path))


def used_of(path: Path, names: set[str], writes: bool = True) -> set[str]:
    """Attributes read (and written, unless `writes` is False) on `locker`, `self.locker` (or
    the like, per `names`)."""
    out = set()
    for node in ast.walk(_tree(path)):
        if not isinstance(node, ast.Attribute) or (not writes and isinstance(node.ctx, ast.Store)):
            continue
        base = node.value
        if isinstance(base, ast.Name) and base.id in names:
            out.add(node.attr)
        elif (
            isinstance(base, ast.Attribute)
            and isinstance(base.value, ast.Name)
            and base.value.id == "self"
            and base.attr in names
        ):
            out.add(node.attr)
    return out


def members(path: Path, cls: str) -> set[str]:
    """A class's methods, class attributes and the `self.X` it assigns, bases in the file too."""
    classes = {n.name: n for n in _tree(path).body if isinstance(n, ast.ClassDef)}
    out: set[str] = set()
    todo = [cls]
    while todo:
        node = classes[todo.pop()]
        todo += [b.id for b in node.bases if isinstance(b, ast.Name) and b.id in classes]
        for item in node.body:
            if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                out.add(item.name)
            elif isinstance(item, ast.Assign):
                out |= {t.id for t in item.targets if isinstance(t, ast.Name)}
        for sub in ast.walk(node):
            if isinstance(sub, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
                targets = sub.targets if isinstance(sub, ast.Assign) else [sub.target]
                for t in targets:
                    if (
                        isinstance(t, ast.Attribute)
                        and isinstance(t.value, ast.Name)
                        and t.value.id == "self"
                    ):
                        out.add(t.attr)
    return out


def test_the_link_uses_only_what_the_locker_has():
    used = used_of(FIRMWARE / "locker" / "link.py", {"locker"})
    assert {"journal", "keys", "state_json", "acknowledged", "on_commit"} <= used  # it reads it
    locker = members(FIRMWARE / "locker" / "core.py", "Locker")
    assert used - locker == set()


def test_the_link_tests_stand_in_has_the_same_interface():
    used = used_of(FIRMWARE / "locker" / "link.py", {"locker"})
    scenarios = ROOT / "tests" / "firmware" / "link_scenarios.py"
    for cls in ("StandIn", "RealJournalStandIn"):
        assert used - members(scenarios, cls) == set(), cls


def test_every_board_method_called_exists_on_both_boards():
    # what they call or read (what the app hangs on a board, e.g. on_clock_set, is its own)
    called = used_of(FIRMWARE / "locker" / "core.py", {"board"}, writes=False)
    called |= used_of(FIRMWARE / "app.py", {"board"}, writes=False)
    assert {"now", "ticks_ms", "set_lock", "feedback", "door", "poll_card"} <= called
    sim = members(FIRMWARE / "hal" / "sim" / "board.py", "Board")
    esp32 = members(FIRMWARE / "hal" / "esp32.py", "Board")
    optional = {"run", "sample_heap"}  # docs/architecture.md: the board interface
    assert called - optional - sim == set()
    assert called - optional - esp32 == set()
    control = used_of(FIRMWARE / "hal" / "sim" / "control.py", {"board"}, writes=False)
    assert control - sim == set()


def test_the_check_sees_a_missing_name(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(
        "class A:\n    x = 1\n    def __init__(self):\n        self.y = 2\n    def f(self):\n"
        "        pass\nclass B(A):\n    def g(self, locker):\n        locker.f()\n"
        "        locker.z = 3\n        self.locker.w\n"
    )
    assert members(probe, "B") == {"x", "y", "f", "g", "__init__"}
    assert used_of(probe, {"locker"}) - members(probe, "B") == {"z", "w"}
