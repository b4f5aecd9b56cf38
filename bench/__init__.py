"""classlocker's benchmarks: `make bench` (`python -m bench`) measures what matters against what
bounds it, side by side, and writes docs/benchmarks.md.

Each benchmark module has a `NAME`, a `run(ctx)` that returns a list of `Figure`s, and its sizes
in `SIZES` (`full` and `quick`). Benchmarks never assert on a number: a figure is a measurement,
not a test. `tests/test_bench_smoke.py` runs every one at the quick sizes so that they keep
working.
"""
