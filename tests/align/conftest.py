"""Shared fixtures for tests/align (pairs / generate / eval / end-to-end): one tiny pipeline per session."""
from __future__ import annotations

import copy

import pytest
import torch


@pytest.fixture(scope="session")
def _tiny_pipe_session():
    from imgpref.align.tiny import build_tiny_pipeline

    return build_tiny_pipeline(seed=0)


@pytest.fixture
def tiny_pipe(_tiny_pipe_session):
    """A tiny SD1.5-style pipeline (seed 0). Shared: tests must not modify it (deepcopy it to train)."""
    return _tiny_pipe_session


@pytest.fixture
def fresh_tiny_pipe(_tiny_pipe_session):
    """A private copy of the tiny pipeline that a test may train or modify."""
    return copy.deepcopy(_tiny_pipe_session)


@pytest.fixture(scope="session")
def tiny_pipe_dir(_tiny_pipe_session, tmp_path_factory):
    """The tiny pipeline saved with save_pretrained (a PATH for the CLI)."""
    d = tmp_path_factory.mktemp("tiny_pipe")
    _tiny_pipe_session.save_pretrained(d, safe_serialization=True)
    return d


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny models on a shared 2-core machine: one intra-op thread avoids oversubscription stalls.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
