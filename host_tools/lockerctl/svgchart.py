"""Bar charts as SVG text, drawn on the server (`lockerctl report`, the dashboard's report page).

Why our own 60 lines rather than a charting library: the dashboard's Content-Security-Policy
allows no outside script (and a chart drawn in the browser would not be in the HTML file
`lockerctl report` writes, nor print from it), and the charts needed are plain bar charts. An
SVG in the page needs no script and no inline style (presentation attributes only), scales to
the paper when printed, and is read by screen readers through its `<title>` and the table of
figures printed beside it.
"""

from __future__ import annotations

from html import escape

WIDTH = 640
HEIGHT = 240
_LEFT, _RIGHT, _TOP, _BOTTOM = 70, 10, 10, 62


def _nice_top(value: int) -> int:
    """The axis' top: the round number (1, 2, 5, 10, 20...) at or above `value`."""
    top = 1
    while top < value:
        top = _next_round(top)
    return top


def _next_round(n: int) -> int:
    """1, 2, 5, 10, 20, 50, 100, ...: the next round number after n."""
    magnitude = 1
    while magnitude * 10 <= n:
        magnitude *= 10
    for m in (2, 5, 10):
        if m * magnitude > n:
            return m * magnitude
    return 10 * magnitude


def bar_chart(title: str, labels: list[str], values: list[int], unit: str = "") -> str:
    """An accessible SVG bar chart (role img, a title, one labelled bar per value)."""
    n = max(len(values), 1)
    top = _nice_top(max(values, default=0))
    plot_w = WIDTH - _LEFT - _RIGHT
    plot_h = HEIGHT - _TOP - _BOTTOM
    slot = plot_w / n
    bar_w = max(slot * 0.7, 1.0)
    every = max(1, round(n / 16))  # at most about 16 labels under the axis
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        f'<line x1="{_LEFT}" y1="{_TOP + plot_h}" x2="{WIDTH - _RIGHT}" y2="{_TOP + plot_h}" '
        'stroke="#333" stroke-width="1"/>',
    ]
    for frac in (0, 0.5, 1):
        y = _TOP + plot_h - frac * plot_h
        value = top * frac
        shown = f"{value:g}"
        out.append(
            f'<text x="{_LEFT - 4}" y="{y + 4:.1f}" text-anchor="end" font-size="11" '
            f'fill="#333">{shown}</text>'
        )
        if frac:
            out.append(
                f'<line x1="{_LEFT}" y1="{y:.1f}" x2="{WIDTH - _RIGHT}" y2="{y:.1f}" '
                'stroke="#ccc" stroke-width="0.5"/>'
            )
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        h = plot_h * value / top if top else 0
        x = _LEFT + i * slot + (slot - bar_w) / 2
        y = _TOP + plot_h - h
        out.append(
            f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{h:.1f}" '
            f'fill="#2a6f97"><title>{escape(label)}: {value}{escape(unit)}</title></rect>'
        )
        if i % every == 0:
            cx = x + bar_w / 2
            ly = _TOP + plot_h + 14
            out.append(
                f'<text x="{cx:.1f}" y="{ly}" font-size="10" fill="#333" text-anchor="end" '
                f'transform="rotate(-40 {cx:.1f} {ly})">{escape(label)}</text>'
            )
    out.append("</svg>")
    return "".join(out)
