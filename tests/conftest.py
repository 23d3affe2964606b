"""Shared fixtures: tiny config-built models and a tokenizer trained in memory (no network)."""

from __future__ import annotations

import os

import pytest
import torch

from steerlab.testing import tiny_model, tiny_tokenizer

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def tok():
    return tiny_tokenizer("left")


@pytest.fixture(scope="session")
def tok_right():
    return tiny_tokenizer("right")


@pytest.fixture()
def llama():
    return tiny_model("llama")
