"""Hypothesis profiles: ``default`` (fast, CI) and ``thorough`` (HYPOTHESIS_PROFILE=thorough)."""

import os

import torch
from hypothesis import HealthCheck, settings

# The suite is many small problems: one intra-op thread avoids oversubscription on 2 cores.
torch.set_num_threads(1)

settings.register_profile(
    "default",
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
settings.register_profile(
    "thorough",
    max_examples=5000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
