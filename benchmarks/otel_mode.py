"""Run a module with OpenTelemetry set up one of three ways (for the tracing benchmark).

    python -m benchmarks.otel_mode MODE MODULE [ARGS...]

MODE is
- `off`: OpenTelemetry is never imported (what every user without tracing gets: the SDK
  and the Hub start no span and send no header),
- `noop`: the OpenTelemetry API is imported but no SDK is installed (spans are no-ops),
- `sdk`: the OpenTelemetry SDK with a batch span processor into an in-memory exporter
  (every span recorded and kept; no network exporter, so the figure is our cost only).
"""

from __future__ import annotations

import runpy
import sys
from typing import Final

MODES: Final = ("off", "noop", "sdk")


def install(mode: str) -> None:
    """Set this process up for `mode`."""
    if mode == "off":
        return
    if mode == "noop":
        import opentelemetry.trace  # noqa: F401  (imported, nothing installed)

        return
    if mode != "sdk":
        raise ValueError(f"unknown mode {mode!r}: one of {', '.join(MODES)}")
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(InMemorySpanExporter()))
    trace.set_tracer_provider(provider)


def main() -> None:
    """`MODE MODULE ARGS...`: install MODE, then run MODULE as `__main__` with ARGS."""
    if len(sys.argv) < 3:
        raise SystemExit("usage: python -m benchmarks.otel_mode MODE MODULE [ARGS...]")
    mode, module = sys.argv[1], sys.argv[2]
    install(mode)
    sys.argv = [module, *sys.argv[3:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
