"""The one-line error every layer may raise for a mistake in what the user asked for.

It lives below the CLI (`clibase` re-exports it) so that modules the CLI uses, such as
`timetable`, can raise it without importing the CLI.
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
