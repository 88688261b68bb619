"""Hypothesis profiles for the parser fuzzers: a few seconds per parser in ``make test``, many more
examples in ``make fuzz`` (``CERNVM_FUZZ=1``; ``CERNVM_FUZZ_EXAMPLES=N`` to choose how many)."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# No deadline: tests never assert on wall-clock time; a hang is caught by pytest-timeout instead.
_COMMON = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large]}
settings.register_profile("test", max_examples=150, database=None, derandomize=True, **_COMMON)
settings.register_profile(
    "fuzz",
    max_examples=int(os.environ.get("CERNVM_FUZZ_EXAMPLES", "20000")),
    print_blob=True,  # a failure prints the @reproduce_failure blob to make it a regression example
    **_COMMON,
)
settings.load_profile("fuzz" if os.environ.get("CERNVM_FUZZ") else "test")
