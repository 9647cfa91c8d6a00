"""The reward models' larger world CLIP: layout captions, deterministic pretraining, cached on first use."""
import numpy as np
import pytest
import torch
from scipy import ndimage

from imgpref.world import reward_clip as rc
from imgpref.world.scenes import COLOURS, Obj, Scene, parse_prompt, split_combos


def test_layout_phrase_names_where_the_mass_sits():
    one = lambda cx, cy: Scene((Obj("circle", "red", 6.0, cx, cy),), "blue")  # noqa: E731
    assert rc.layout_phrase(one(16, 16)) == "in the middle"
    assert rc.layout_phrase(one(18, 14)) == "in the middle"           # 2.8 px off: still the middle (< 4 px)
    assert rc.layout_phrase(one(8, 8)) == "at the top left"
    assert rc.layout_phrase(one(24, 16)) == "at the right"
    assert rc.layout_phrase(one(16, 25)) == "at the bottom"
    # two objects: the mean of their centres (16, 24) is 8 px below the centre
    two = Scene((Obj("square", "red", 5.0, 8, 24), Obj("square", "red", 5.0, 24, 24)), "blue")
    assert rc.layout_phrase(two) == "at the bottom"


def test_layout_dataset_captions_match_the_rendered_scenes():
    train, held = split_combos(0)
    images, texts = rc.layout_dataset(80, seed=3, combos=train, p_four=0.3)
    assert images.shape == (80, 32, 32, 3) and len(texts) == 80
    again = rc.layout_dataset(80, seed=3, combos=train, p_four=0.3)
    assert np.array_equal(again[0], images) and again[1] == texts
    fours = 0
    for img, text in zip(images, texts):
        prompt, _, where = text.partition(", ")
        assert where in ("", "in the middle") or where.startswith("at the ")
        words = prompt.split()
        spec = parse_prompt(prompt.replace("four ", "two ", 1) if words[0] == "four" else prompt)
        assert (spec.colour, spec.shape) in train                   # held-out combos stay unseen
        # count the objects in the pixels: connected regions of the object colour
        mask = np.abs(img.astype(int) - np.array(COLOURS[spec.colour])).sum(-1) < 30
        n = ndimage.label(mask)[1]
        assert n == (4 if words[0] == "four" else spec.count), text
        fours += words[0] == "four"
    assert 10 <= fours <= 40                                         # p_four 0.3 of 80


@pytest.mark.slow
def test_reward_clip_is_larger_and_pretrains_deterministically():
    torch.set_num_threads(1)
    v, base_v = rc.REWARD_CLIP_CONFIG["vision_config"], rc.WORLD_CLIP_CONFIG["vision_config"]
    assert v["hidden_size"] > base_v["hidden_size"] and v["num_hidden_layers"] > base_v["num_hidden_layers"]
    assert rc.REWARD_CLIP_CONFIG["text_config"] == rc.WORLD_CLIP_CONFIG["text_config"]
    sizes = rc.RewardClipSizes.quick()
    a = rc.pretrain_reward_clip(sizes).state_dict()
    b = rc.pretrain_reward_clip(sizes).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    from imgpref.world.clip_pretrain import build_world_clip

    c = build_world_clip(1, rc.REWARD_CLIP_CONFIG).state_dict()       # another seed starts elsewhere
    assert not torch.equal(a["visual_projection.weight"], c["visual_projection.weight"])
    assert a["vision_model.embeddings.patch_embedding.weight"].shape[0] == v["hidden_size"]


def test_reward_clip_dir_pretrains_once_then_reuses_the_cache(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    sizes = rc.RewardClipSizes.quick()
    calls = []
    real = rc.pretrain_reward_clip
    monkeypatch.setattr(rc, "pretrain_reward_clip", lambda *a, **k: calls.append(1) or real(*a, **k))
    first = rc.reward_clip_dir(tmp_path, sizes)
    assert (first / "config.json").is_file() and (first / "preprocessor_config.json").is_file()
    assert rc.reward_clip_dir(tmp_path, sizes) == first and len(calls) == 1
    assert first.name == f"reward_clip-{rc.reward_clip_digest(sizes)}"
    assert rc.reward_clip_digest(sizes) != rc.reward_clip_digest(rc.RewardClipSizes())
    assert not list(tmp_path.glob(".*.tmp"))                          # written beside, then renamed into place


def test_reward_clip_cache_key_changes_with_the_training_code_bytes(tmp_path, monkeypatch):
    """The cached reward CLIP is keyed on the bytes of the code that trains it (as the flow base is): an edit to
    one module (a stand-in added to TRAINING_CODE) names a new folder; restoring the bytes names the old one."""
    module = tmp_path / "fake_reward_clip_code.py"
    module.write_text("STEPS = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(rc, "TRAINING_CODE", rc.TRAINING_CODE + ("fake_reward_clip_code",))
    sizes = rc.RewardClipSizes.quick()
    first = rc.reward_clip_digest(sizes)
    module.write_text("STEPS = 2\n")
    assert rc.reward_clip_digest(sizes) != first
    module.write_text("STEPS = 1\n")
    assert rc.reward_clip_digest(sizes) == first
    assert "imgpref.world.pretrain_modules" in rc.TRAINING_CODE  # the stage loop (optimiser, schedule) is covered


def test_rm_clip_dir_choices(tmp_path):
    from imgpref.world.reward import rm_clip_dir

    assert rm_clip_dir("base", tmp_path / "clip") == tmp_path / "clip"
    with pytest.raises(ValueError, match="BASE_DIR/clip"):
        rm_clip_dir("base")
    with pytest.raises(ValueError, match="'huge'"):
        rm_clip_dir("huge", tmp_path)


def test_weight_cache_keys_change_with_a_library_release(monkeypatch):
    """A new diffusers / transformers / Lightning / torch release can change initialisation or training, so the
    trained-weights cache keys (reward CLIP, flow base) name the versions as well as the code."""
    import importlib.metadata

    from imgpref.world import store

    real = importlib.metadata.version
    sizes = rc.RewardClipSizes.quick()
    first = rc.reward_clip_digest(sizes)
    for lib in ("torch", "diffusers", "transformers", "lightning"):
        monkeypatch.setattr(importlib.metadata, "version", lambda name, lib=lib: "0.0.1" if name == lib else real(name))
        assert rc.reward_clip_digest(sizes) != first, lib
    monkeypatch.setattr(importlib.metadata, "version", real)
    assert rc.reward_clip_digest(sizes) == first
    assert store.WEIGHT_LIBRARIES == ("torch", "diffusers", "transformers", "lightning")
