"""Loop pieces that run without a base model: prompt splits, the gold scorer preset, recipes, the curve plot."""
from dataclasses import replace

import numpy as np
import pytest
import torch

from imgpref.world.loop import LoopConfig, align_recipe, overoptimisation_plot
from imgpref.world.reward import is_heldout_combo, world_prompts
from imgpref.world.scenes import caption, parse_prompt, render, sample_scene, split_combos


def test_world_prompts_are_distinct_and_test_holds_out_combos():
    p = world_prompts(0, 30, 8, 12)
    every = p["train"] + p["val"] + p["test"]
    assert len(every) == len(set(every)) == 50
    held = set(split_combos(0)[1])
    assert not {parse_prompt(x).combo for x in p["train"] + p["val"]} & held
    assert sum(is_heldout_combo(x) for x in p["test"]) == 6
    assert world_prompts(0, 30, 8, 12) == p and world_prompts(1, 30, 8, 12) != p


def test_gold_scorer_preset_matches_the_judge():
    from imgpref.scorers.registry import load_scorer
    from imgpref.world.gold_scorer import register_world_scorers
    from imgpref.world.judge import judge

    register_world_scorers()
    register_world_scorers()                                     # idempotent
    rng = np.random.default_rng(0)
    scenes = [sample_scene(rng) for _ in range(6)]
    imgs = np.stack([render(s) for s in scenes])
    # half right, half with a count of 1 whatever the scene holds: a spread of utilities
    prompts = [caption(s) if i % 2 else caption(replace(s.spec, count=1)) for i, s in enumerate(scenes)]
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255.0
    expect = judge(imgs, prompts)
    for name, key in [("world-gold", "utility"), ("world-gold-fidelity", "fidelity"),
                      ("world-gold-aesthetics", "aesthetics")]:
        scorer = load_scorer(name)
        assert scorer.needs_prompt and scorer.higher_is_better
        np.testing.assert_allclose(scorer.score(x, prompts).numpy(), expect[key], rtol=1e-5, atol=1e-6)
        # as a reward (what align pairs / align eval call), and on PIL images of another size
        np.testing.assert_allclose(scorer.as_reward()(x, prompts).numpy(), expect[key], rtol=1e-5, atol=1e-6)
    from PIL import Image

    big = [Image.fromarray(im).resize((64, 64), Image.NEAREST) for im in imgs]
    np.testing.assert_allclose(load_scorer("world-gold").score(big, prompts).numpy(), expect["utility"], atol=0.05)


def test_align_recipe_falls_back_to_tiny_and_rejects_unknown():
    assert align_recipe("dpo").name in ("world_dpo.yaml", "tiny_dpo.yaml") and align_recipe("dpo").is_file()
    assert align_recipe("mapo").is_file()
    with pytest.raises(ValueError, match="kto"):
        align_recipe("kto")


def test_overoptimisation_plot_writes_png(tmp_path):
    curve = [{"method": m, "steps": s, "gold_win": g, "proxy_win": p}
             for m in ("dpo", "mapo") for s, g, p in [(10, 0.6, 0.7), (20, 0.55, 0.9)]]
    path = overoptimisation_plot(curve, tmp_path / "c.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_quick_config_is_smaller():
    q, full = LoopConfig.quick(3), LoopConfig()
    assert q.seed == 3 and q.n_train_prompts < full.n_train_prompts and q.curve_steps[-1] < full.curve_steps[-1]


def test_world_gold_is_a_preset_without_importing_the_world():
    # the entry point (pyproject: imgpref.scorers) registers it on first registry use, as the CLI needs
    import subprocess
    import sys

    code = ("import sys; from imgpref.scorers.registry import load_scorer; s = load_scorer('world-gold'); "
            "print(s.name, 'imgpref.world.loop' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["world-gold", "False"]


@pytest.mark.slow
def test_micro_loop_on_the_committed_base_writes_every_stage(tmp_path, monkeypatch):
    """The whole chain at toy size on the committed base: votes -> RM -> eval vs gold -> RM-labelled pairs ->
    DPO and MaPO (2 steps each) -> compared with the base on held-out prompts. Plumbing only: the numbers of a
    run this small mean nothing (benchmarks hold the real ones)."""
    import json

    from imgpref.world import store
    from imgpref.world.loop import run_loop

    if not (store.PACK_DIR / store.PACK_WEIGHTS).is_file():
        pytest.skip("the committed world base pack is missing (imgpref world pretrain --pack writes it)")
    monkeypatch.setenv("IMGPREF_CACHE", str(tmp_path / "cache"))
    torch.set_num_threads(1)
    cfg = LoopConfig(k_votes=3, n_train_prompts=6, n_val_prompts=3, n_test_prompts=4,
                     rm_overrides=("trainer.max_epochs=1",), rm_clip="base", n_pair_prompts=4, k_pairs=3, curve_steps=(1, 2),
                     n_eval_prompts=3, eval_seeds=1)
    summary = run_loop(tmp_path / "loop", config=cfg)
    out = tmp_path / "loop"
    assert json.loads((out / "loop_summary.json").read_text())["seconds"]["total"] > 0
    assert 0 <= summary["rm_eval"]["accuracy"] <= 1 and summary["rm_eval"]["oracle_accuracy"] > 0
    assert [(r["method"], r["steps"]) for r in summary["curve"]] == [("dpo", 1), ("dpo", 2), ("mapo", 1), ("mapo", 2)]
    for m in ("dpo", "mapo"):
        assert (out / f"eval_{m}" / "grid.png").is_file() and summary["final"][m]["align_eval"]["gold_win"] >= 0
    assert (out / "overoptimisation.png").is_file() and (out / "curve.csv").is_file()
