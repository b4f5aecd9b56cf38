"""Runs every firmware test module under MicroPython, one pytest item per test function.

A module whose first lines contain `# runs-on: micropython cpython` is also collected by pytest
under CPython (pure logic shared by both interpreters); one with `# runs-on: micropython` only
under MicroPython. `# heapsize: 96k` in the header limits the heap as on an ESP32.

The modules run as a board loads them: compiled by mpy-cross once per run (line numbers kept for
tracebacks), the firmware and the test modules alike. Compiling a module from source takes far
more RAM than running it, and on a 96k heap that, not the code under test, was what ran out.
"""

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
MICROPYTHON = ROOT / ".venv" / "bin" / "micropython"
MODULE_TIMEOUT = 600
sys.path.insert(0, str(ROOT / "firmware"))


def _header(path: Path) -> str:
    with open(path, encoding="utf-8") as f:
        return "".join(f.readline() for _ in range(5))


def _test_names(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [
        n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")
    ]


def pytest_collect_file(file_path: Path, parent):
    if (
        file_path.suffix == ".py"
        and file_path.name.startswith("test_")
        and file_path.parent == HERE
        and "micropython" in _runs_on(file_path)
    ):
        return MicroPythonFile.from_parent(parent, path=file_path)
    return None


def _runs_on(path: Path) -> str:
    """The words after `runs-on:` in a module's header (`micropython` when it says nothing)."""
    header = _header(path)
    if "runs-on:" not in header:
        return "micropython"
    return header.split("runs-on:")[-1].split("\n")[0]


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makemodule(module_path: Path, parent):
    if module_path.parent == HERE and "cpython" not in _runs_on(module_path):
        return _NotForCPython.from_parent(parent, path=module_path)
    return None


class _NotForCPython(pytest.Module):
    def collect(self):
        return []


def _fixtures(config) -> Path:
    """Host-made bundles and commands for the firmware tests, made once per session."""
    cached = getattr(config, "_mpy_fixtures", None)
    if cached is None:
        cached = config._tmp_path_factory.mktemp("fixtures")  # noqa: SLF001
        proc = subprocess.run(
            [sys.executable, str(HERE / "make_fixtures.py"), str(cached)],
            capture_output=True,
            text=True,
        )
        if proc.returncode:  # tests that need them fail, and say why
            (cached / "ERROR").write_text(proc.stderr[-2000:])
        config._mpy_fixtures = cached
    return cached


def _compiled(config) -> Path:
    """The firmware and the MicroPython-side test modules compiled by mpy-cross, once per run."""
    cached = getattr(config, "_mpy_compiled", None)
    if cached is None:
        cached = config._tmp_path_factory.mktemp("compiled")  # noqa: SLF001
        sys.path.insert(0, str(ROOT / "tools"))
        try:
            from build_firmware import compile_tree
        finally:
            sys.path.pop(0)
        compile_tree(ROOT / "firmware", cached, flags=())
        mpy_cross = MICROPYTHON.parent / "mpy-cross"
        for path in sorted(HERE.glob("*.py")):
            if path.name in _SOURCE_ONLY or (
                path.name.startswith("test_") and "micropython" not in _runs_on(path)
            ):
                continue
            subprocess.run(
                [str(mpy_cross), "-o", str(cached / (path.stem + ".mpy")), str(path)],
                check=True,
                cwd=ROOT,
            )
        config._mpy_compiled = cached
    return cached


# CPython's side of the runner, and scripts tests run directly rather than import.
_SOURCE_ONLY = {"conftest.py", "make_fixtures.py", "mpyrun.py", "link_scenarios.py"}


class MicroPythonFile(pytest.File):
    def collect(self):
        self._results = None
        for name in _test_names(self.path):
            yield MicroPythonCase.from_parent(self, name="mpy::" + name, fn=name)

    def results(self, tmp_root: Path) -> dict:
        if self._results is None:
            header = _header(self.path)
            m = re.search(r"heapsize:\s*(\S+)", header)
            cmd = [str(MICROPYTHON)]
            if m:
                cmd += ["-X", "heapsize=" + m.group(1)]
            cmd += [str(HERE / "mpyrun.py"), self.path.stem]
            env = dict(
                os.environ,
                MPYTEST_TMP=str(tmp_root),
                MPYTEST_ROOT=str(ROOT),
                MPYTEST_FIXTURES=str(_fixtures(self.config)),
                MPYTEST_COMPILED=str(_compiled(self.config)),
            )
            try:
                proc = subprocess.run(
                    cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=MODULE_TIMEOUT
                )
                out, err, code = proc.stdout, proc.stderr, proc.returncode
            except subprocess.TimeoutExpired as e:
                out, err, code = (e.stdout or b"").decode(), "timed out", -1
            results = {}
            for line in out.splitlines():
                if line.startswith("@@case "):
                    case = json.loads(line[7:])
                    results[case["name"]] = case
            self._results = results
            self._tail = "exit {}\n{}\n{}".format(code, out[-3000:], err[-3000:])
        return self._results


class MicroPythonCase(pytest.Item):
    def __init__(self, *, fn, **kw):
        super().__init__(**kw)
        self.fn = fn

    def runtest(self):
        tmp_root = self.config._tmp_path_factory.mktemp("mpy")  # noqa: SLF001
        case = self.parent.results(tmp_root).get(self.fn)
        if case is None:
            raise MicroPythonFailure("no result (module crashed?)\n" + self.parent._tail)
        if case["outcome"] == "skipped":
            pytest.skip(case["detail"])
        if case["outcome"] == "failed":
            raise MicroPythonFailure(case["detail"])

    def repr_failure(self, excinfo):
        if isinstance(excinfo.value, MicroPythonFailure):
            return "MicroPython: " + str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.path, None, "micropython " + self.name


class MicroPythonFailure(Exception):
    pass
