"""Shared fixtures: small synthetic data and a fake posterior (no sampling)."""

from __future__ import annotations

import numpy as np
import pytest

from bayes_cmma.studies.synthetic import simulate_summaries


@pytest.fixture(scope="session")
def synthetic():
    """A model-consistent data set (120 trials, 4 teams, degree 2) with its true parameters."""
    return simulate_summaries(np.random.default_rng(11), n_trials=120, n_teams=4, beta=(2.0, -1.0))


@pytest.fixture(scope="session")
def example():
    from bayes_cmma.datasets import load_example

    return load_example()
