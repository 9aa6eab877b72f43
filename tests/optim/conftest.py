"""Fixtures for the optimizer tests: PyTorch as an optional oracle."""

import pytest


@pytest.fixture(scope="session")
def torch():
    """The torch module; tests that take it are skipped when PyTorch is not installed."""
    return pytest.importorskip("torch", reason="PyTorch is an optional oracle")
