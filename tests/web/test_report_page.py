"""The policy report's HTML (`lockerctl report`) in a real browser (Debian's chromium): its
charts render (bars of real size, one per day and per week), it fits the screen, and it prints
on A4 (a PDF of A4 pages). The screenshot goes to docs/screenshots/report.png on request
(LOCKER_UPDATE_SCREENSHOTS=1)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from fortnight import FIRST, LAST, make_fortnight

pytestmark = pytest.mark.slow


def test_the_report_renders_its_charts_and_prints_on_a4(tmp_path, context, shots):
    from lockerctl.cli import _load_commands, cli

    db, made = make_fortnight(tmp_path)
    out = tmp_path / "report.html"
    _load_commands()
    r = CliRunner().invoke(
        cli, ["report", "--from", str(FIRST), "--to", str(LAST), "-o", str(out), "--db", db]
    )
    assert r.exit_code == 0, r.output
    page = context.new_page()
    page.goto(out.as_uri())
    deposits = page.locator("figure.deposits svg rect.bar")
    assert deposits.count() == 11  # 9 school days and 2 Saturdays
    heights = [deposits.nth(i).bounding_box()["height"] for i in range(deposits.count())]
    assert all(h > 0 for h in heights)  # every day had deposits: every bar is drawn
    days = sorted({d for d, _, m in made if m == "deposits"})
    per_day = [
        sum(n for (d, _, m), n in made.items() if d == day and m == "deposits") for day in days
    ]
    # the tallest bar is the day with the most deposits
    assert heights.index(max(heights)) == per_day.index(max(per_day))
    weeks = page.locator("figure.incidents svg rect.bar")
    assert weeks.count() == 2
    assert page.locator("figure.deposits svg").bounding_box()["width"] > 300
    assert page.evaluate(
        "document.documentElement.scrollWidth <= document.documentElement.clientWidth"
    )
    shots(page, "report")
    pdf = page.pdf(format="A4", print_background=True)
    assert pdf.startswith(b"%PDF")
    assert pdf.count(b"/MediaBox [0 0 595") >= 1  # A4: 595 x 842 points
