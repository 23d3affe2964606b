"""Shared fixtures: tiny config-built models and a tokenizer trained in memory (no network)."""

from __future__ import annotations

import pytest
import torch

from steerlab.testing import tiny_model, tiny_tokenizer

# Tiny models are dominated by per-op overhead; one thread is fastest, most of all on a loaded machine.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tok():
    return tiny_tokenizer("left")


@pytest.fixture(scope="session")
def tok_right():
    return tiny_tokenizer("right")


@pytest.fixture()
def llama():
    return tiny_model("llama")
