"""Benchmarks against the performance budget of DESIGN.md §7 (`python -m benchmarks`).

They report; they do not gate (exit 0 even when a target is missed, unless `--strict`).
Not part of `make test`: run them with `make bench`.
"""
