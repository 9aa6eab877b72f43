"""Shared test set-up: hypothesis profiles and the device parametrization.

Profiles: ``ci`` (the default) is derandomized with few examples so the suite stays fast on two
cores; ``thorough`` runs many more. Pick one with ``--hypothesis-profile=thorough`` or the
environment variable ``TINYNLM_HYPOTHESIS_PROFILE``.
"""

import os

import pytest
from hypothesis import HealthCheck, settings

import tinynlm as tn

settings.register_profile("ci", max_examples=25, derandomize=True, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=400, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("TINYNLM_HYPOTHESIS_PROFILE", "ci"))

GPU_REASON = "no usable CUDA GPU (tn.cuda.is_available() is False: needs CuPy and a GPU)"

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not tn.cuda.is_available(), reason=GPU_REASON)),
]


@pytest.fixture(params=DEVICES, scope="session")
def device(request):
    """Each test that takes ``device`` runs on the CPU and, where one is usable, on a GPU."""
    return request.param


@pytest.fixture(autouse=True)
def _seeded():
    tn.manual_seed(1234)
