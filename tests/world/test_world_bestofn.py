"""benchmarks/world_bestofn.py: best-of-n selection in disjoint groups and the unpaired win rate, on hand examples."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from world_bestofn import gain_ci, pick, unpaired_win  # noqa: E402


def test_pick_takes_the_best_of_each_disjoint_group():
    sel = np.array([[3.0, 1.0, 2.0, 5.0], [0.0, 4.0, 9.0, 8.0]])
    # groups of 1: every image; of 2: (3,1)->0, (2,5)->3 and (0,4)->1, (9,8)->2; of 4: the maximum
    assert pick(sel, 1).tolist() == [[0, 1, 2, 3], [0, 1, 2, 3]]
    assert pick(sel, 2).tolist() == [[0, 3], [1, 2]]
    assert pick(sel, 4).tolist() == [[3], [2]]


def test_unpaired_win_compares_outside_the_group_and_counts_ties_half():
    # one group (n = N): nothing outside it to compare with
    assert np.isnan(unpaired_win(np.array([[3.0]]), np.array([[1.0, 2.0, 3.0]])))
    # pool (1, 4 | 2, 2), groups of 2, picks 4 and 2: 4 against the other group (2, 2) wins twice, 2 against
    # (1, 4) wins once and loses once -> (1 + 1 + 1 + 0) / 4
    assert unpaired_win(np.array([[4.0, 2.0]]), np.array([[1.0, 4.0, 2.0, 2.0]])) == 0.75
    # n = 1 (every image its own pick): ties with itself never count, so a strict order of 3 gives 0.5
    assert unpaired_win(np.array([[1.0, 2.0, 3.0]]), np.array([[1.0, 2.0, 3.0]])) == 0.5


def test_gain_interval_of_a_constant_gain_is_that_gain():
    base = np.array([[0.1, 0.3], [0.5, 0.7], [0.2, 0.2]])
    lo, hi = gain_ci(base + 0.05, base)
    assert abs(lo - 0.05) < 1e-12 and abs(hi - 0.05) < 1e-12
