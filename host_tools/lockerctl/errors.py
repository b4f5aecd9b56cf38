"""The one-line error every layer may raise for a mistake in what the user asked for.

It lives below the CLI (`clibase` re-exports it) so that helpers of the commands can raise it
without importing the CLI. The modules below the commands raise errors of their own (ValueError,
`timetable.TimetableError`, `store.StoreError`), which the commands turn into these.
"""

import re

import click

_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def printable(text: str) -> str:
    """`text` safe for one line of a terminal: control characters (newlines, ESC...) and bytes
    that were not UTF-8 shown as escapes."""
    return _UNPRINTABLE.sub(lambda m: m.group().encode("unicode_escape", "backslashreplace")
                            .decode("ascii"), text)  # fmt: skip


class UserError(click.ClickException):
    """A mistake in what the user asked for: one line on stderr, exit 1, no traceback."""

    def show(self, file=None):
        click.echo(f"lockerctl: {printable(self.format_message())}", err=True, file=file)


class UserErrors(UserError):
    """Several mistakes found at once (a file's): one line on stderr for each, exit 1."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))

    def show(self, file=None):
        for problem in self.problems:
            click.echo(f"lockerctl: {printable(problem)}", err=True, file=file)
