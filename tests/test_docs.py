"""The docs cannot drift from the code.

- Every `lockerctl ...` command line shown in README.md, docs/cli.md and docs/install.md (in a
  fenced code block, or as code in a table or in the text) names commands that exist:
  `lockerctl <command words> --help` exits 0 for each, and the words stop only where the command
  takes its arguments (a renamed or removed subcommand fails).
- Every module that docs/architecture.md lists in its tables exists.
"""

import re
from pathlib import Path

import click
import pytest
from lockerctl.cli import main

ROOT = Path(__file__).resolve().parent.parent
COMMAND_DOCS = ["README.md", "docs/cli.md", "docs/install.md"]
_FENCE = re.compile(r"^\s*```")
_SPAN = re.compile(r"`([^`]+)`")
# `lockerctl` as the command of a shell line (after `sudo ...`, `.venv/bin/`, ...), not as the
# name of a package (`pipx inject lockerctl ...`, `dist/lockerctl-*.whl`)
_IN_LINE = re.compile(r"(?:^|[\s;&|(])(?:\S*/)?lockerctl(?=\s|$)")
_NOT_A_COMMAND = {"inject", "install", "uninstall"}
# what lockerctl prints, quoted in a doc (not a command)
QUOTED_OUTPUT = {"lockerctl runs from /root/..."}


def _from_lockerctl(text: str) -> str | None:
    """The command line from the word `lockerctl` on, without a trailing `# comment`."""
    text = text.replace("\\|", "|")
    m = _IN_LINE.search(text)
    if m is None or text[: m.start() + 1].split()[-1:] in [[w] for w in _NOT_A_COMMAND]:
        return None
    line = text[m.end() :]
    line = re.split(r"\s#\s", line, maxsplit=1)[0]
    return ("lockerctl" + line).strip()


def command_lines(doc: str) -> list[tuple[int, str]]:
    """(line number, command line) for each `lockerctl` command shown in `doc`."""
    out = []
    fenced = False
    for number, text in enumerate((ROOT / doc).read_text(encoding="utf-8").splitlines(), 1):
        if _FENCE.match(text):
            fenced = not fenced
            continue
        if fenced:
            found = _from_lockerctl(text)
            if found:
                out.append((number, found))
            continue
        for span in _SPAN.findall(text):  # table cells and text: code that runs `lockerctl`
            found = _from_lockerctl(span)
            if found and span not in QUOTED_OUTPUT:
                out.append((number, found))
    return out


def _all_commands():
    try:
        main(["--help"])  # loads every area's commands onto the group
    except SystemExit:
        pass
    from lockerctl.clibase import cli

    return cli


def command_words(line: str) -> list[list[str]]:
    """The command words of a documented line, one list per command it names (`sim tap|door`
    names two). pytest.fail when a word where a subcommand belongs names none."""
    cli = _all_commands()
    tokens = line.split()[1:]
    paths: list[list[str]] = [[]]
    group: click.Command = cli
    for token in tokens:
        if not isinstance(group, click.Group):
            break  # a command: what follows are its arguments and options
        if not re.fullmatch(r"[a-z][a-z0-9-]*(\|[a-z][a-z0-9-]*)*", token):
            break  # an option (`--version`), a placeholder (`...`, `ID`): no more words
        names = token.split("|")
        missing = [n for n in names if n not in group.commands]
        if missing:
            pytest.fail(f"{line!r}: no command {' '.join(paths[0] + [missing[0]])!r}")
        if len(names) > 1:
            paths = [p + [n] for p in paths for n in names]
            group = group.commands[names[0]]
            continue
        paths = [p + [token] for p in paths]
        group = group.commands[token]
    return paths


def _documented():
    seen = {}
    for doc in COMMAND_DOCS:
        for number, line in command_lines(doc):
            seen.setdefault(line, f"{doc}:{number}")
    return sorted(seen.items(), key=lambda kv: kv[1])


DOCUMENTED = _documented()


def test_the_docs_show_commands():
    lines = [line for line, _ in DOCUMENTED]
    assert len(lines) > 30
    for expected in (
        "lockerctl export --format csv",
        "lockerctl audit key",
        "lockerctl --version",
    ):
        assert any(line.startswith(expected) for line in lines), expected


@pytest.mark.parametrize(("line", "where"), DOCUMENTED, ids=[w for _, w in DOCUMENTED])
def test_every_documented_command_exists(line, where, capsys):
    for words in command_words(line):
        with pytest.raises(SystemExit) as info:
            main([*words, "--help"])
        out = capsys.readouterr().out
        assert info.value.code == 0, f"{where}: lockerctl {' '.join(words)} --help"
        assert f"Usage: lockerctl {' '.join(words)}".rstrip() in out, (where, out[:200])


def test_a_misspelt_or_removed_command_is_caught():
    with pytest.raises(pytest.fail.Exception, match="no command 'roster importt'"):
        command_words("lockerctl roster importt FILE.csv")
    with pytest.raises(pytest.fail.Exception, match="no command 'sim push'"):
        command_words("lockerctl sim tap|push LOCKER")
    assert command_words("lockerctl sim tap|door L1") == [["sim", "tap"], ["sim", "door"]]
    assert command_words("lockerctl user add office1 --role office") == [["user", "add"]]
    assert command_words("lockerctl --version") == [[]]


# -- docs/architecture.md ----------------------------------------------------------------------

_HEADING_ROOT = re.compile(r"^##\s.*\(`([^`]+/)`\)")


def architecture_modules() -> list[tuple[int, Path]]:
    """(line, path) of the module in the first cell of every table row, resolved against the
    directory its section names (`## Firmware (`firmware/`)`)."""
    out = []
    root = None
    text = (ROOT / "docs/architecture.md").read_text(encoding="utf-8")
    for number, line in enumerate(text.splitlines(), 1):
        m = _HEADING_ROOT.match(line)
        if m:
            root = ROOT / m.group(1)
            continue
        if not line.startswith("|") or root is None:
            continue
        first = line.split("|")[1]
        for name in _SPAN.findall(first):
            out.append((number, root / name))
    return out


def test_the_modules_docs_architecture_lists_exist():
    listed = architecture_modules()
    assert len(listed) > 30
    assert (ROOT / "firmware/locker/core.py") in [p for _, p in listed]
    assert (ROOT / "host_tools/lockerctl/store/engine.py") in [p for _, p in listed]
    missing = [
        f"docs/architecture.md:{n}: {p.relative_to(ROOT)}" for n, p in listed if not p.exists()
    ]
    assert not missing, "\n".join(missing)
