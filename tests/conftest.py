"""Hypothesis profiles of the whole suite, loaded before any test module is imported.

- `gate` (the default; `make test`, CI): derandomized and without the example database, so
  one commit always gives one result. Inputs that once failed are kept as `@example`s.
- `fuzz` (`make fuzz`): random seeds and `AETHER_FUZZ_SCALE` (default 20) times the examples
  of each property test; for use before a codec change, not in the gate.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_SLOW = [HealthCheck.too_slow, HealthCheck.data_too_large]

settings.register_profile(
    "gate", derandomize=True, database=None, deadline=None, suppress_health_check=_SLOW
)
settings.register_profile("fuzz", derandomize=False, deadline=None, suppress_health_check=_SLOW)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "gate"))


def fuzz_scale() -> int:
    """How many times its stated examples a property test runs under the active profile."""
    if settings().derandomize:
        return 1
    return int(os.environ.get("AETHER_FUZZ_SCALE", "20"))
