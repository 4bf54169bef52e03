"""Shared pytest set-up: hypothesis without per-example deadlines, because
CI shares two cores with devnet processes and timing is not what these
properties test (speed is measured by scripts/bench)."""

from hypothesis import settings

settings.register_profile("derivnet", deadline=None)
settings.load_profile("derivnet")
