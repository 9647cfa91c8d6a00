"""Hand-worked examples of the Pick-a-Pic, HPD v2 and ImageReward protocols (REFERENCE.md)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imgpref.eval import protocols as P

FIXTURES = Path(__file__).parents[1] / "data" / "fixtures"


def test_pickapic_threshold_tuning_and_accuracy():
    # Validation: |p1 - p0| = |tanh((s1 - s0) / 2)| for p = softmax([s0, s1]).
    #   a (2, 0)   label 0    |d| = tanh(1)   = 0.7616
    #   b (0, 1)   label 1    |d| = tanh(0.5) = 0.4621
    #   c (0.2, 0) label tie  |d| = tanh(0.1) = 0.0997
    #   d (0, 0.4) label tie  |d| = tanh(0.2) = 0.1974
    # t=0.0: preds 0,1,0,1 -> credits 1,1,.5,.5 = 0.75
    # t=0.1: c becomes a tie -> 1,1,1,.5 = 0.875
    # t=0.2: d becomes a tie -> 1,1,1,1 = 1.0   (also 0.3 and 0.4; the first maximum wins -> 0.2)
    # t=0.5: b becomes a tie -> 1,.5,1,1 = 0.875
    s0 = [2.0, 0.0, 0.2, 0.0]
    s1 = [0.0, 1.0, 0.0, 0.4]
    lab = [0, 1, 0.5, 0.5]
    assert P.pickapic_accuracy(s0, s1, lab, 0.0) == 0.75
    assert P.pickapic_accuracy(s0, s1, lab, 0.1) == 0.875
    assert P.pickapic_accuracy(s0, s1, lab, 0.5) == 0.875
    t = P.tune_pickapic_threshold(s0, s1, lab)
    assert t == 0.2
    # Test with t = 0.2:
    #   (1, 0)   label 1: |d| = 0.462 > 0.2 -> pred 0, mismatch without a tie -> 0
    #   (0, 0.1) label 0: |d| = 0.05 -> pred tie, mismatch with a tie -> 0.5
    #   (3, 0)   label 0: pred 0 -> 1
    #   (0, 0)   label tie: |d| = 0 <= 0.2 -> tie -> 1
    # accuracy = 2.5 / 4 = 0.625
    assert P.pickapic_accuracy([1, 0, 3, 0], [0, 0.1, 0, 0], [1, 0, 0, 0.5], t) == 0.625


def test_pickapic_threshold_is_inclusive():
    assert P.pickapic_predictions([0.0], [0.0], 0.0)[0] == 0.5  # |p1 - p0| = 0 <= 0
    # |d| = 1 always <= 1: t = 1 predicts ties everywhere
    assert np.all(P.pickapic_predictions([50.0, -3.0], [0.0, 3.0], 1.0) == 0.5)


def test_pickapic_bad_label():
    with pytest.raises(ValueError, match="0, 1 or 0.5"):
        P.pickapic_accuracy([1], [0], [2], 0.1)
    with pytest.raises(ValueError, match="validation"):
        P.tune_pickapic_threshold([], [], [])


def test_hpd_three_prompts_by_hand():
    # Prompt A: scores (3,2,1), human ranks (1,2,3): model ranks (1,2,3), 0 inversions of 3 -> 1
    # Prompt B: scores (1,2,3), human ranks (1,2,2): model ranks (3,2,1);
    #   (0,1) inverted, (0,2) inverted, (1,2) human tie -> never an inversion: 1 - 2/3 = 1/3
    # Prompt C: scores (5,5,0), human ranks (2,1,3): stable argsort of -s gives model ranks (1,2,3)
    #   (the earlier image wins the tie); (0,1) inverted, (0,2) and (1,2) agree: 1 - 1/3 = 2/3
    # mean = (1 + 1/3 + 2/3) / 3 = 2/3
    scores = [np.array([3, 2, 1.0]), np.array([1, 2, 3.0]), np.array([5, 5, 0.0])]
    ranks = [np.array([1, 2, 3]), np.array([1, 2, 2]), np.array([2, 1, 3])]
    assert P.hpd_prompt_accuracy(scores[1], ranks[1]) == pytest.approx(1 / 3)
    assert P.hpd_prompt_accuracy(scores[2], ranks[2]) == pytest.approx(2 / 3)
    assert P.hpd_accuracy(scores, ranks) == pytest.approx(2 / 3)
    # the tie-break is by position: swapping the human order of C's tied pair makes it perfect
    assert P.hpd_prompt_accuracy([5, 5, 0], [1, 2, 3]) == 1.0


def test_ranks_from_pairs_recovers_a_ranking_with_ties():
    ranks = np.array([2, 1, 2, 4])  # competition ranks, items 0 and 2 tied
    i0, i1 = np.triu_indices(4, k=1)
    lab = np.where(ranks[i0] < ranks[i1], 0.0, np.where(ranks[i0] > ranks[i1], 1.0, 0.5))
    assert P.ranks_from_pairs(i0, i1, lab, 4).tolist() == [2, 1, 2, 4]


def test_imagereward_pooled_vs_per_prompt():
    # g1: (2,1) label 0 -> correct
    # g2: (1,2) label 0 -> wrong; (1,1) label 1 -> model tie counts wrong; (0,3) label 1 -> correct;
    #     (5,0) human tie -> skipped
    # pooled: 2 correct / 4 counted = 0.5; per prompt: (1/1 + 1/3) / 2 = 2/3
    s0, s1 = [2, 1, 1, 0, 5], [1, 2, 1, 3, 0]
    lab = [0, 0, 1, 1, 0.5]
    groups = ["g1", "g2", "g2", "g2", "g2"]
    assert P.imagereward_accuracy(s0, s1, lab) == 0.5
    assert P.imagereward_accuracy(s0, s1, lab, groups, per_prompt=True) == pytest.approx(2 / 3)


def test_labels_from_votes():
    assert P.labels_from_votes([[1, 0, 0], [0, 1, 0], [0, 0, 1], [3, 3, 5], [10, 9, 6]]).tolist() == [
        0, 1, 0.5, 0.5, 0]


# Published files through `data convert` and `evaluate` ---------------------------------------------------------


def _solid(path: Path, red: int) -> None:
    """A lossless solid image: the conftest scorer gives it red / 255, so the score order is the order of `red`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (6, 6), (red, 40, 80)).save(path, lossless=True)


def _thudm_accuracy(entries: list[dict], rewards: list[list[float]]) -> float:
    """THUDM/ImageReward test.py `acc`, written independently: pooled over pairs; human ties skipped; a model
    tie is wrong; ranking 1 = best."""
    total = correct = 0.0
    for entry, reward in zip(entries, rewards):
        rank = entry["ranking"]
        for i in range(len(rank)):
            for j in range(i + 1, len(rank)):
                if rank[i] == rank[j]:
                    continue
                total += 1
                better, worse = (i, j) if rank[i] < rank[j] else (j, i)
                correct += reward[better] > reward[worse]
    return correct / total


def test_imagereward_protocol_reproduces_thudm_accuracy(tmp_path, red_scorer):
    from imgpref.data.readers import convert
    from imgpref.eval.evaluate import evaluate

    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(FIXTURES / "imagereward" / "test.json", data / "test.json")
    entries = json.loads((data / "test.json").read_text())
    # a fixed score list with model ties inside rankings (entry 1: 90/90; entry 4: 30/30 on a human tie)
    rewards = [[200, 90, 120, 60], [90, 90, 10, 250], [5, 6, 7, 8], [140, 141, 20, 19],
               [30, 250, 30, 100, 101, 99], [70, 60, 180, 75]]
    for entry, reds in zip(entries, rewards):
        for gen, red in zip(entry["generations"], reds):
            _solid(data / "test_images" / gen, red)
    convert("imagereward", data / "test.json", tmp_path / "ir.csv")
    metrics = evaluate(red_scorer, tmp_path / "ir.csv", split="test", protocol="imagereward", n_resamples=10)
    expected = _thudm_accuracy(entries, rewards)
    assert metrics["accuracy"] == expected  # to the last digit
    assert metrics["n_pairs"] == 43 and metrics["n_human_ties"] == 2 and metrics["n_groups"] == 6
    assert expected == pytest.approx(20 / 43)  # worked by hand: 4 + 2 + 0 + 4 + 5 + 5 correct of 43


def test_hpd_protocol_groups_by_ranking_entry_not_prompt(tmp_path, red_scorer):
    # Two HPD v2 rankings of the same prompt over different images.
    #   entry 0: ranks (1, 2, 3), scores (200, 100, 150): (1,2) inverted, others agree -> 1 - 1/3 = 2/3
    #   entry 1: ranks (2, 1),    scores (50, 60): agree -> 1
    # mean over the 2 rankings = 5/6 over 3 + 1 = 4 judged pairs. Grouped by prompt text the 5 images would form
    # one ranking of 10 pairs, 6 of which nobody compared.
    from imgpref.data.readers import convert
    from imgpref.eval.evaluate import evaluate

    src = tmp_path / "HPDv2"
    for name, red in (("e0.png", 200), ("e1.png", 100), ("e2.png", 150), ("e3.png", 50), ("e4.png", 60)):
        _solid(src / "test" / name, red)
    test = [{"prompt": "same", "image_path": ["e0.png", "e1.png", "e2.png"], "rank": [1, 2, 3]},
            {"prompt": "same", "image_path": ["e3.png", "e4.png"], "rank": [2, 1]}]
    (src / "test.json").write_text(json.dumps(test))
    convert("hpdv2", src, tmp_path / "hpd.csv")
    metrics = evaluate(red_scorer, tmp_path / "hpd.csv", split="test", protocol="hpd", n_resamples=10)
    assert metrics["n_groups"] == 2 and metrics["n_pairs"] == 4 and metrics["n_incomplete_groups"] == 0
    assert metrics["accuracy"] == pytest.approx(5 / 6)
