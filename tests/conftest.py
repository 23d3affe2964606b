"""Shared fixtures: tiny config-built models and a tokenizer trained in memory (no network)."""

from __future__ import annotations

import os

import pytest
import torch

from steerlab.models.tiny import tiny_model, tiny_tokenizer

# Tiny models are dominated by per-op overhead: one thread is fastest, most of all on a loaded machine.
# The embedded model (slow tests) has real matrix work, where every core helps.
FAST_THREADS, SLOW_THREADS = 1, max(1, min(4, os.cpu_count() or 1))
torch.set_num_threads(FAST_THREADS)


@pytest.fixture(autouse=True)
def _threads_for_the_model_size(request):
    slow = request.node.get_closest_marker("slow") is not None
    torch.set_num_threads(SLOW_THREADS if slow else FAST_THREADS)
    yield
    torch.set_num_threads(FAST_THREADS)


@pytest.fixture(scope="session")
def tok():
    return tiny_tokenizer("left")


@pytest.fixture(scope="session")
def tok_right():
    return tiny_tokenizer("right")


@pytest.fixture()
def llama():
    return tiny_model("llama")
