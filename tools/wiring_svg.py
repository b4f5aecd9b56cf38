"""Draw the locker bank's wiring diagram from the pin map, so the picture cannot drift from it.

    python tools/wiring_svg.py                       # hardware/pinmap.json -> hardware/wiring.svg
    python tools/wiring_svg.py --check               # exit 1 when wiring.svg is out of date

The output is deterministic (no dates, fixed float formatting): the same pin map always gives the
same bytes, which is what the test compares.
"""

import argparse
import json
import sys
from pathlib import Path
from xml.sax.saxutils import escape

ROOT = Path(__file__).resolve().parent.parent
PINMAP = ROOT / "hardware" / "pinmap.json"
SVG = ROOT / "hardware" / "wiring.svg"

ROW = 18  # height of one bay row
FONT = "font-family='DejaVu Sans Mono, monospace' font-size='11'"
COLORS = {
    "spi": "#1f6feb",
    "i2c": "#8250df",
    "lock": "#cf222e",
    "reed": "#1a7f37",
    "io": "#9a6700",
    "power": "#57606a",
}


class Canvas:
    def __init__(self):
        self.items = []

    def rect(self, x, y, w, h, title=None, fill="#f6f8fa"):
        self.items.append(
            f"<rect x='{x}' y='{y}' width='{w}' height='{h}' rx='6' fill='{fill}' "
            "stroke='#24292f' stroke-width='1.5'/>"
        )
        if title:
            self.text(x + 8, y + 16, title, bold=True)

    def text(self, x, y, s, color="#24292f", anchor="start", bold=False):
        weight = " font-weight='bold'" if bold else ""
        self.items.append(
            f"<text x='{x}' y='{y}' {FONT} fill='{color}' text-anchor='{anchor}'{weight}>"
            f"{escape(str(s))}</text>"
        )

    def line(self, points, color, dashed=False):
        pts = " ".join(f"{x},{y}" for x, y in points)
        dash = " stroke-dasharray='5,3'" if dashed else ""
        self.items.append(
            f"<polyline points='{pts}' fill='none' stroke='{color}' stroke-width='1.6'{dash}/>"
        )

    def dot(self, x, y, color):
        self.items.append(f"<circle cx='{x}' cy='{y}' r='3' fill='{color}'/>")


def _hz(bus):
    hz = int(bus.get("baudrate") or bus.get("freq") or 0)
    return f"{hz // 1000000} MHz" if hz >= 1000000 and hz % 1000000 == 0 else f"{hz // 1000} kHz"


def _spec(spec):
    head, pin = spec.split(":", 1)
    return (None, int(pin)) if head == "gpio" else (int(head, 16), pin)


def render(pm: dict) -> str:
    bays = pm.get("bays", [])
    by_exp: dict[int, list] = {}
    gpio_bays = []
    for row in bays:
        addr, pin = _spec(row["lock"])
        raddr, rpin = _spec(row["reed"])
        if addr is None or raddr is None:
            gpio_bays.append((row["bay"], row["lock"], row["reed"]))
        else:
            by_exp.setdefault(addr, []).append((row["bay"], pin, raddr, rpin))

    c = Canvas()
    spi, rc, i2c = pm.get("spi", {}), pm.get("mfrc522", {}), pm.get("i2c", {})

    # ESP32 on the left, its used pins listed down its right edge
    esp_pins = []
    if spi and rc:
        esp_pins += [
            ("spi", f"GPIO{spi['sck']}", "SCK"),
            ("spi", f"GPIO{spi['mosi']}", "MOSI"),
            ("spi", f"GPIO{spi['miso']}", "MISO"),
            ("spi", f"GPIO{rc['cs']}", "SDA/CS"),
        ]
        if rc.get("rst") is not None:
            esp_pins.append(("spi", f"GPIO{rc['rst']}", "RST"))
    if i2c:
        esp_pins += [("i2c", f"GPIO{i2c['sda']}", "SDA"), ("i2c", f"GPIO{i2c['scl']}", "SCL")]
    for key in ("buzzer", "led"):
        if pm.get(key):
            esp_pins.append(("io", f"GPIO{pm[key]['pin']}", key))
    for bay, lock, reed in gpio_bays:
        for kind, spec in (("lock", lock), ("reed", reed)):
            _, n = _spec(spec)
            esp_pins.append((kind, f"GPIO{n}", f"bay {bay} {kind}"))
    esp_pins += [("power", "3V3", "3.3 V out"), ("power", "5V", "5 V in"), ("power", "GND", "GND")]

    ex, ey = 20, 60
    eh = 40 + len(esp_pins) * ROW
    c.rect(ex, ey, 200, eh, "ESP32", fill="#eef6ff")
    c.text(ex, ey - 8, pm.get("board", ""), color=COLORS["power"])
    pin_y = {}
    for i, (kind, name, label) in enumerate(esp_pins):
        y = ey + 40 + i * ROW
        c.text(ex + 12, y + 4, label, color=COLORS[kind])
        c.text(ex + 190, y + 4, name, anchor="end", color=COLORS[kind])
        c.dot(ex + 200, y, COLORS[kind])
        pin_y[label] = y

    # MFRC522 reader above the bus
    x2 = 320
    if spi and rc:
        ry = 40  # clear of the I2C lines that pass beneath it
        c.rect(
            x2,
            ry,
            200,
            40 + 5 * ROW,
            f"MFRC522 (SPI{spi.get('id', 2)}, {_hz(spi)})",
            fill="#fff8e6",
        )
        sigs = ["SCK", "MOSI", "MISO", "SDA/CS", "RST"]
        for i, label in enumerate(sigs):
            y = ry + 40 + i * ROW
            c.text(x2 + 12, y + 4, label, color=COLORS["spi"])
            if label in pin_y:
                mid = 250 + i * 8
                c.line(
                    [(ex + 200, pin_y[label]), (mid, pin_y[label]), (mid, y), (x2, y)],
                    COLORS["spi"],
                )

    # I2C bus: a vertical trunk with the RTC and the expanders hanging off it
    trunk_x = 560
    bus_top = pin_y.get("SDA", ey + 40)
    y = 60 + 40 + 7 * ROW + 20
    blocks = []
    rtc = pm.get("rtc")
    if rtc:
        blocks.append(("rtc", rtc, 60))
    for addr in sorted(by_exp):
        blocks.append(("exp", addr, 40 + (len(by_exp[addr]) + 2) * ROW))
    # the trunk starts level with the ESP32's SDA pin
    if i2c:
        for label, off in (("SDA", 0), ("SCL", 6)):
            if label in pin_y:
                c.line(
                    [(ex + 200, pin_y[label]), (trunk_x + off, pin_y[label])],
                    COLORS["i2c"],
                )
    bx = trunk_x + 60
    bottom = y
    prev = bus_top
    for kind, what, h in blocks:
        if kind == "rtc":
            c.rect(bx, y, 320, h, f"DS3231 RTC @ {what.get('address')} + CR2032", fill="#f3eeff")
            c.text(bx + 12, y + 36, "UTC on its cell; OSF set = not trusted")
        else:
            rows = by_exp[what]
            c.rect(bx, y, 320, h, f"MCP23017 @ 0x{what:02x}", fill="#f3eeff")
            c.text(bx + 12, y + 34, "port A: lock drivers   port B: reeds (pull-up)")
            for i, (bay, lpin, raddr, rpin) in enumerate(rows):
                ry = y + 40 + (i + 1) * ROW
                c.text(bx + 12, ry + 4, f"{lpin}", color=COLORS["lock"])
                reed = rpin if raddr == what else f"0x{raddr:02x}:{rpin}"
                c.text(bx + 60, ry + 4, reed, color=COLORS["reed"])
                c.text(bx + 108, ry + 4, f"bay {bay}")
                c.dot(bx + 320, ry, COLORS["lock"])
                lx = bx + 340
                c.line([(bx + 320, ry), (lx, ry)], COLORS["lock"])
                c.text(
                    lx + 6,
                    ry + 4,
                    f"-> MOSFET gate -> solenoid {bay}",
                    color=COLORS["lock"],
                )
                c.text(lx + 215, ry + 4, f"reed switch: {reed} to GND", color=COLORS["reed"])
        ty = y + 20
        c.line([(trunk_x, prev), (trunk_x, ty), (bx, ty)], COLORS["i2c"])
        c.line([(trunk_x + 6, prev + 6), (trunk_x + 6, ty + 6), (bx, ty + 6)], COLORS["i2c"])
        prev = ty
        y += h + 16
        bottom = y
    if i2c:
        c.text(trunk_x - 10, bus_top - 8, f"I2C{i2c.get('id', 0)}, {_hz(i2c)}", "#8250df")

    # power notes under the ESP32
    py = max(ey + eh + 30, 380)
    notes = [
        "Power: 12 V PSU -> fuse -> solenoid rail (1000 uF bulk at the drivers)",
        "       12 V -> buck 5 V -> ESP32 5V pin; 3V3 -> reader, expanders, RTC",
        "Locks are fail-secure: unpowered = locked. Expander pins are inputs",
        "from reset and the gate pull-downs hold every MOSFET off until the",
        "firmware drives a bay: a reset or brown-out never opens a bay.",
        "Reeds: closed (magnet at the door) = 0 V = door shut.",
        "Each bay: expander pin -> 100R -> MOSFET gate (10k to GND);",
        "solenoid between +12 V and drain, 1N5819 across it (flyback).",
    ]
    for i, line in enumerate(notes):
        c.text(20, py + i * 16, line, color=COLORS["power"])
    bottom = max(bottom, py + len(notes) * 16)

    width = 1360
    height = bottom + 20
    head = (
        "<?xml version='1.0' encoding='UTF-8'?>\n"
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
        f"viewBox='0 0 {width} {height}'>\n"
        "<!-- generated by tools/wiring_svg.py from hardware/pinmap.json: do not edit -->\n"
        f"<rect width='{width}' height='{height}' fill='white'/>\n"
    )
    title = (
        f"<text x='20' y='30' font-family='DejaVu Sans, sans-serif' font-size='18' "
        f"font-weight='bold'>classlocker bank wiring: {len(bays)} bays</text>\n"
    )
    return head + title + "\n".join(c.items) + "\n</svg>\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pinmap", type=Path, default=PINMAP)
    ap.add_argument("-o", "--output", type=Path, default=SVG)
    ap.add_argument("--check", action="store_true", help="fail if the output is out of date")
    args = ap.parse_args(argv)
    try:
        pm = json.loads(args.pinmap.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        print(f"wiring_svg: {args.pinmap}: {e}", file=sys.stderr)
        return 2
    svg = render(pm)
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
        if current != svg:
            print(
                f"wiring_svg: {args.output} is out of date: run tools/wiring_svg.py",
                file=sys.stderr,
            )
            return 1
        return 0
    args.output.write_text(svg, encoding="utf-8")
    print(f"wiring_svg: wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
