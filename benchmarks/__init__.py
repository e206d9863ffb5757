"""Benchmarks against the performance budget (`python -m benchmarks`).

The targets: docs/architecture.md#performance-budget.

They report; they do not gate (exit 0 even when a target is missed, unless `--strict`).
Not part of `make test`: run them with `make bench`.
"""
