"""The firmware only imports what ESP32 MicroPython has, and the ESP32 code type-checks against
the `micropython-esp32-stubs` (the port's real signatures for machine, network, time, ...)."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE = ROOT / "firmware"

# Modules an ESP32 MicroPython build (ESP32_GENERIC) provides, built in or frozen.
ESP32_MODULES = {
    "builtins", "machine", "network", "ntptime", "esp32", "time", "os", "sys", "gc", "json",
    "struct", "binascii", "hashlib", "asyncio", "socket", "select", "ssl", "micropython",
    "errno", "io", "collections", "random",
}  # fmt: skip
OWN = {
    "locker",
    "hal",
    "drivers",
    "umqtt",
    "main",
    "app",
    "bootloader",
    "bootrecord",
}  # umqtt: lib/, fetched at build time
NOT_FIRMWARE = {"manifest.py"}  # the recipe for freezing, run by the MicroPython build
ESP32_CODE = ["hal/esp32.py", "drivers"]


def firmware_files():
    for path in sorted(FIRMWARE.rglob("*.py")):
        rel = path.relative_to(FIRMWARE)
        if "__pycache__" in rel.parts or rel.as_posix() in NOT_FIRMWARE:
            continue
        yield path


def imports(path: Path):
    """(line, dotted module) for every import in the file, top level or nested."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                yield node.lineno, "." * node.level + (node.module or "")
            else:
                yield node.lineno, node.module or ""


def offenders(paths) -> list[str]:
    bad = []
    for path in paths:
        for line, mod in imports(path):
            top = mod.split(".")[0]
            if mod.startswith("."):
                bad.append(
                    f"{path}:{line}: relative import {mod} (MicroPython packages: use absolute)"
                )
            elif top not in ESP32_MODULES and top not in OWN:
                bad.append(f"{path}:{line}: {mod} is not on ESP32 MicroPython")
    return bad


def test_firmware_imports_only_what_esp32_micropython_has():
    files = list(firmware_files())
    assert any(p.name == "esp32.py" for p in files)
    assert offenders(files) == []


def test_own_imports_name_modules_that_exist():
    missing = []
    for path in firmware_files():
        for line, mod in imports(path):
            parts = mod.split(".")
            if parts[0] not in ("locker", "hal", "drivers"):
                continue
            base = FIRMWARE.joinpath(*parts)
            if not (base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()):
                # `from hal import make_board`: a name inside the package, not a module
                pkg = FIRMWARE.joinpath(*parts[:-1])
                if not (pkg / "__init__.py").is_file() and not pkg.with_suffix(".py").is_file():
                    missing.append(f"{path}:{line}: {mod}")
    assert missing == []


# -- layers: locker/ (logic) < hal/ (boards) < app.py; drivers/ (chips) stand alone ---------------
# What each package may not import (docs/architecture.md, "Firmware").
FORBIDDEN = {
    "locker": {"hal", "drivers", "app", "main"},
    "drivers": {"locker", "hal", "app", "main"},
}


def layer_offenders(paths, package: str) -> list[str]:
    bad = []
    for path in paths:
        for line, mod in imports(path):
            if mod.split(".")[0] in FORBIDDEN[package]:
                bad.append(f"{path}:{line}: {package}/ imports {mod}")
    return bad


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_layers_import_only_downwards(package):
    files = sorted((FIRMWARE / package).rglob("*.py"))
    assert files
    assert layer_offenders(files, package) == []


def test_the_layer_check_catches_an_upward_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from hal import make_board\nimport drivers.ds3231\ndef f():\n    from locker import x\n"
    )
    found = layer_offenders([bad], "locker")
    assert len(found) == 2 and "imports hal" in found[0] and "imports drivers" in found[1]
    found = layer_offenders([bad], "drivers")  # a nested import counts too
    assert len(found) == 2 and "imports hal" in found[0] and "imports locker" in found[1]


def test_the_check_catches_what_esp32_lacks(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import typing\nfrom dataclasses import dataclass\nfrom . import x\n"
        "def f():\n    import enum\n"
    )
    found = offenders([bad])
    assert len(found) == 4
    assert "typing" in found[0] and "dataclasses" in found[1] and "enum" in found[3]


# -- type check against micropython-esp32-stubs ---------------------------------------------------
def _stub_dir(tmp_path: Path) -> Path:
    """The ESP32 stubs as one search path (they install as loose .pyi files in site-packages)."""
    from importlib import metadata

    try:
        esp32 = metadata.distribution("micropython-esp32-stubs")
        stdlib = metadata.distribution("micropython-stdlib-stubs")
    except metadata.PackageNotFoundError:
        pytest.skip("micropython-esp32-stubs not installed (pip install micropython-esp32-stubs)")
    out = tmp_path / "stubs"
    for f in esp32.files or []:
        if f.suffix == ".pyi":
            target = out / f
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(Path(esp32.locate_file(f)).resolve())
    for f in stdlib.files or []:
        if f.parts[0] == "_mpy_shed":
            target = out / f
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists():
                target.symlink_to(Path(stdlib.locate_file(f)).resolve())
    typeshed = Path(stdlib.locate_file("stdlib")).parent
    return out, typeshed


def _mypy(tmp_path, targets, cwd):
    pytest.importorskip("mypy", reason="mypy not installed (pip install mypy)")
    stubs, typeshed = _stub_dir(tmp_path)
    cmd = [
        sys.executable, "-m", "mypy", "--custom-typeshed-dir", str(typeshed),
        "--python-version", "3.11", "--no-site-packages", "--follow-imports=silent",
        "--check-untyped-defs", "--no-error-summary", "--show-error-codes",
        "--cache-dir", str(tmp_path / "cache"), *targets,
    ]  # fmt: skip
    env = dict(os.environ, MYPYPATH=str(stubs))
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    # the stubs themselves carry a few errors of their own; only ours count
    return [ln for ln in proc.stdout.splitlines() if ": error:" in ln and not ln.startswith("/")]


def test_esp32_code_type_checks_against_the_stubs(tmp_path):
    errors = _mypy(tmp_path, ESP32_CODE, FIRMWARE)
    assert errors == []


def test_type_check_is_live(tmp_path):
    """A wrong call into machine must be caught, or the check above proves nothing."""
    probe = tmp_path / "probe"
    probe.mkdir()
    (probe / "wrong.py").write_text(
        "import machine\nimport network\n"
        "machine.Pin(5, machine.Pin.OUT).valeu(1)\n"
        "network.WLAN(network.STA_IF).connect(1, 2, 3, 4, 5)\n"
    )
    errors = _mypy(tmp_path, ["wrong.py"], probe)
    assert any("valeu" in e for e in errors), errors
    assert not any("import-not-found" in e for e in errors), errors


def test_manifest_freezes_every_firmware_package():
    """Runs firmware/manifest.py with the manifest functions MicroPython's build provides."""
    frozen, required, included = [], [], []

    def package(name, files=None, base_path=".", opt=None):
        frozen.append((name, files))

    def module(name, base_path=".", opt=None):
        frozen.append((name, None))

    env = {
        "include": lambda path, **kw: included.append(path),
        "require": lambda name, **kw: required.append(name),
        "package": package,
        "module": module,
        "freeze": lambda *a, **kw: None,
    }
    exec(compile((FIRMWARE / "manifest.py").read_text(), "manifest.py", "exec"), env)
    names = {name for name, _ in frozen}
    packages = {p.parent.name for p in FIRMWARE.glob("*/__init__.py")}
    assert packages <= names, packages - names
    assert "umqtt.simple" in required
    for name, files in frozen:
        for f in files or ():
            assert (FIRMWARE / name / f).is_file(), (name, f)
    assert ("hal", ("__init__.py", "esp32.py")) in frozen  # the simulated board stays out
    assert ("app.py", None) in frozen  # the composition root main.py imports
