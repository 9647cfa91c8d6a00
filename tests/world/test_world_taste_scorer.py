"""The second taste group's gold scorer (`world-gold-taste1`) is 0.3 fidelity + 0.7 aesthetics of the judge."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image


def test_taste1_scorer_weights_aesthetics_as_the_second_group():
    from imgpref.scorers.registry import load_scorer
    from imgpref.world.gold_scorer import register_world_scorers
    from imgpref.world.judge import judge
    from imgpref.world.scenes import sample_dataset

    register_world_scorers()
    images, prompts = sample_dataset(6, 11)
    prompts = prompts[1:] + prompts[:1]  # mostly wrong prompts: fidelity and aesthetics differ, weights matter
    j = judge(images, prompts)
    expected = 0.3 * j["fidelity"] + 0.7 * j["aesthetics"]  # group 1's weights, written out by hand
    got = np.asarray(load_scorer("world-gold-taste1").score([Image.fromarray(im) for im in images], prompts))
    assert got == pytest.approx(expected, abs=1e-5)
    gold = np.asarray(load_scorer("world-gold").score([Image.fromarray(im) for im in images], prompts))
    assert gold == pytest.approx(0.7 * j["fidelity"] + 0.3 * j["aesthetics"], abs=1e-5)
    assert np.abs(got - gold).max() > 0.05  # the two tastes really differ on these images
