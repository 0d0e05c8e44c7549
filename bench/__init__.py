"""Benchmarks: each runs both sides in one process run and prints a comparison table.

Run them from the repository root as modules (`python -m bench.operator_scale`), or
through `make bench-*`."""
