"""hardware/: the pin map is consistent, the wiring diagram is what the generator makes from
it, and the bill of materials scales with the bays the pin map wires."""

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HW = ROOT / "hardware"
sys.path.insert(0, str(ROOT / "tools"))

import wiring_svg  # noqa: E402

INPUT_ONLY = {34, 35, 36, 37, 38, 39}  # ESP32 pins that cannot drive
FLASH_PINS = {6, 7, 8, 9, 10, 11}  # wired to the module's SPI flash


def _pinmap():
    return json.loads((HW / "pinmap.json").read_text())


def _spec(s):
    head, pin = s.split(":")
    return head, pin


def test_pinmap_bays_are_numbered_and_no_pin_serves_twice():
    pm = _pinmap()
    bays = pm["bays"]
    assert [b["bay"] for b in bays] == list(range(1, len(bays) + 1))
    assert len(bays) >= 24
    used = set()
    for b in bays:
        for key in ("lock", "reed"):
            spec = _spec(b[key])
            assert spec not in used, f"bay {b['bay']} {key}: {b[key]} used twice"
            used.add(spec)
    addresses = {int(_spec(b["lock"])[0], 16) for b in bays if not b["lock"].startswith("gpio")}
    assert addresses == {int(e["address"], 16) for e in pm["expanders"]}
    assert all(0x20 <= a <= 0x27 for a in addresses)  # MCP23017 strap range
    assert int(pm["rtc"]["address"], 16) not in addresses


def test_esp32_pins_are_distinct_and_usable():
    pm = _pinmap()
    spi, rc, i2c = pm["spi"], pm["mfrc522"], pm["i2c"]
    outputs = [spi["sck"], spi["mosi"], rc["cs"], rc["rst"], i2c["scl"], i2c["sda"],
               pm["buzzer"]["pin"], pm["led"]["pin"]]  # fmt: skip
    pins = outputs + [spi["miso"]]
    assert len(pins) == len(set(pins)), pins
    assert not set(outputs) & INPUT_ONLY
    assert not set(pins) & FLASH_PINS


def test_wiring_svg_is_generated_from_the_committed_pinmap():
    committed = (HW / "wiring.svg").read_text(encoding="utf-8")
    assert committed == wiring_svg.render(_pinmap()), "run: .venv/bin/python tools/wiring_svg.py"
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "wiring_svg.py"), "--check"],
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr


def test_wiring_svg_follows_a_changed_pinmap(tmp_path):
    pm = _pinmap()
    pm["bays"][0]["lock"] = "0x20:A5"
    pm["bays"][5]["lock"] = "0x20:A0"
    pm["led"]["pin"] = 27
    svg = wiring_svg.render(pm)
    assert svg != wiring_svg.render(_pinmap())
    assert "GPIO27" in svg
    import xml.dom.minidom

    xml.dom.minidom.parseString(svg)  # well-formed
    out = tmp_path / "w.svg"
    src = tmp_path / "p.json"
    src.write_text(json.dumps(pm))
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools" / "wiring_svg.py"),
            "--pinmap",
            str(src),
            "-o",
            str(out),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0 and out.read_text() == svg


def _bom():
    with open(HW / "bom.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return rows


def test_bom_has_the_columns_and_every_row_is_complete():
    with open(HW / "bom.csv", newline="", encoding="utf-8") as f:
        header = next(csv.reader(f))
    for col in ("part", "quantity", "purpose", "manufacturer_part_number", "notes"):
        assert col in header
    for row in _bom():
        for col in header:
            assert row[col].strip(), (row["part"], col)
        for q in ("quantity", "quantity_16", "quantity_24"):
            assert int(row[q]) >= 0


def test_bom_scales_with_the_bays():
    rows = {r["part"]: r for r in _bom()}

    def q(part, n):
        return int(rows[part]["quantity" if n == 8 else f"quantity_{n}"])

    per_bay = [
        "Logic-level N-MOSFET", "Gate pull-down 10 kOhm", "Flyback diode",
        "12 V fail-secure solenoid lock", "Reed switch with magnet", "Resettable fuse per bay",
    ]  # fmt: skip
    for n in (8, 16, 24):
        assert q("MCP23017 I/O expander", n) == math.ceil(n / 8)
        assert q("ESP32 development board", n) == 1 and q("MFRC522 reader module", n) == 1
        for part in per_bay:
            assert q(part, n) == n, (part, n)
    for part in ("DS3231 RTC module", "CR2032 lithium cell", "12 V power supply"):
        assert part in rows
    assert q("MCP23017 I/O expander", 24) == len(_pinmap()["expanders"])
