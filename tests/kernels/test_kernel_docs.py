"""The docstring examples of the CPU kernel modules (``kernels/`` sits outside the package
folder pytest collects doctests from, so they run here)."""

import doctest
import importlib

import pytest

import tinynlm  # noqa: F401  (maps kernels/ to tinynlm.kernels in a source checkout)


@pytest.mark.parametrize("name", ["tinynlm.kernels", "tinynlm.kernels.cpu_fused",
                                  "tinynlm.kernels.cpu_attention", "tinynlm.kernels.cpu_math",
                                  "tinynlm.kernels.cpu_recurrence",
                                  "tinynlm.kernels.cpu_parallel", "tinynlm.kernels.cpu_scatter"])
def test_kernel_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
