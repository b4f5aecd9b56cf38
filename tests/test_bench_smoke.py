"""Every benchmark runs at its quick sizes and produces its figures (`make bench` keeps working).
Nothing here looks at a number: benchmarks never fail the suite on speed."""

import math

import pytest

from bench.__main__ import BENCHMARKS, main, parse_args
from bench.core import Context, Figure, headlines, markdown, table

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", sorted(BENCHMARKS))
def test_benchmark_runs_at_quick_sizes_and_reports_its_figures(name, tmp_path):
    mod = BENCHMARKS[name]
    sizes = dict(mod.SIZES["quick"])
    sizes.pop("runs", None)
    ctx = Context(sizes=sizes, runs=1, workdir=tmp_path, quick=True, log=lambda msg: None)
    figures = mod.run(ctx)
    assert figures, f"{name} produced no figures"
    for f in figures:
        assert isinstance(f, Figure)
        assert f.samples, f"{name}: {f.name} has no samples"
        assert all(math.isfinite(x) and x >= 0 for x in f.samples), (name, f.name, f.samples)
    assert set(mod.SIZES) == {"full", "quick"}
    text = table(figures)
    assert all(f.name in text for f in figures)
    assert all(isinstance(h, str) for h in headlines(figures))


def test_the_page_holds_the_machine_and_every_figure():
    figs = [
        Figure("Ingest", "serve rate", "events/s", [1000.0, 1200.0, 900.0], "20 x 2,500"),
        Figure("Journal", "bytes per event", "B", [42.0]),
    ]
    info = {
        "cpu": "Test CPU",
        "cores": 2,
        "memory": "1.0 GiB",
        "os": "Linux",
        "python": "3.11",
        "micropython": "MicroPython 1.29",
        "mosquitto": "mosquitto 2",
        "sqlite": "3.40",
        "commit": "abc1234",
    }
    page = markdown(figs, info, "Intro.", "--quick", 61.0)
    assert "Test CPU, 2 cores" in page and "## Ingest" in page and "## Journal" in page
    assert "| serve rate | 1,000 | events/s | 900 – 1,200 (3 runs) | 20 x 2,500 |" in page
    assert "(1 run)" in page


def test_bad_arguments_are_refused(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--only", "nosuch"])
    assert main(["--runs", "0", "--out", "-"]) == 2
    assert "--runs must be at least 1" in capsys.readouterr().err
