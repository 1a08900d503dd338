"""Suite-wide test configuration.

Hypothesis runs without per-example deadlines: the suite shares small machines with other work, and a
slow example is not a failure. `HYPOTHESIS_PROFILE=thorough` runs more examples.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile("default", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", parent=settings.get_profile("default"), max_examples=1_000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
