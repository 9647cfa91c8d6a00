"""The world's scene grammar: determinism, prompts, held-out combinations, rendering geometry."""
import numpy as np
import pytest

from imgpref.world.scenes import (
    COLOURS,
    SHAPES,
    Obj,
    PromptSpec,
    Scene,
    all_combos,
    caption,
    parse_prompt,
    render,
    sample_dataset,
    sample_prompts,
    sample_scene,
    split_combos,
)


def test_sample_dataset_is_deterministic_and_seed_dependent():
    a, pa = sample_dataset(20, seed=3)
    b, pb = sample_dataset(20, seed=3)
    c, pc = sample_dataset(20, seed=4)
    assert a.dtype == np.uint8 and a.shape == (20, 32, 32, 3)
    assert np.array_equal(a, b) and pa == pb
    assert not np.array_equal(a, c)


def test_caption_parse_round_trip_over_many_scenes():
    rng = np.random.default_rng(0)
    for _ in range(300):
        scene = sample_scene(rng)
        text = caption(scene)
        assert parse_prompt(text) == scene.spec
        assert caption(parse_prompt(text)) == text


def test_caption_wording_by_hand():
    spec = PromptSpec(2, "red", "circle", "blue")
    assert caption(spec) == "two red circles on a blue background"
    assert caption(PromptSpec(1, "green", "triangle", "orange")) == "one green triangle on an orange background"
    assert parse_prompt("A Red Square on a white background.") == PromptSpec(1, "red", "square", "white")


@pytest.mark.parametrize("bad", ["two red circles", "four red circles on a blue background",
                                 "two pink circles on a blue background", "two red hexagons on a blue background"])
def test_parse_prompt_rejects_non_world_prompts_naming_them(bad):
    with pytest.raises(ValueError, match="prompt|count|colour|shape"):
        parse_prompt(bad)


def test_scene_invariants_background_differs_and_objects_inside_and_apart():
    rng = np.random.default_rng(1)
    for _ in range(300):
        s = sample_scene(rng)
        assert s.background != s.colour and 1 <= s.count <= 3
        assert s.colour in COLOURS and s.shape in SHAPES
        for o in s.objects:
            assert o.size - 1e-9 <= o.cx <= 32 - o.size and o.size <= o.cy <= 32 - o.size
        for i, a in enumerate(s.objects):
            for b in s.objects[i + 1:]:
                assert max(abs(a.cx - b.cx), abs(a.cy - b.cy)) >= 2 * a.size + 2 - 1e-9


def test_split_combos_hold_out_combinations_not_words():
    train, held = split_combos(0)
    assert len(held) == 4 and not set(train) & set(held)
    assert sorted(train + held) == sorted(all_combos())
    assert {c for c, _ in train} == set(COLOURS) and {s for _, s in train} == set(SHAPES)
    assert split_combos(0) == (train, held) and split_combos(1)[1] != held
    _, prompts = sample_dataset(200, seed=0, combos=train)
    assert not {parse_prompt(p).combo for p in prompts} & set(held)
    assert {parse_prompt(p).combo for p in sample_prompts(200, 0, combos=held)} <= set(held)


def test_render_pixels_by_hand():
    # a square of half-extent 5 (half side 0.85 * 5 = 4.25) centred at (16, 16): pixel centres 12.5..19.5 inside
    scene = Scene((Obj("square", "red", 5.0, 16.0, 16.0),), "blue")
    img = render(scene)
    assert tuple(img[16, 16]) == COLOURS["red"] and tuple(img[0, 0]) == COLOURS["blue"]
    inside = np.all(img == np.array(COLOURS["red"], np.uint8), axis=-1)
    assert inside[12:20, 12:20].all() and inside.sum() == 64   # pixels 12..19 fully covered, edges partial
    # the triangle points up: its top half holds fewer object pixels than its bottom half
    tri = render(Scene((Obj("triangle", "white", 8.0, 16.0, 16.0),), "black")).astype(int).sum(-1) > 300
    assert tri[8:16].sum() * 2 < tri[16:24].sum()


def test_caption_noise_flaws_a_share_of_images_and_keeps_every_prompt_and_clean_image():
    from imgpref.world.judge import judge

    clean, prompts = sample_dataset(300, seed=5)
    noisy, noisy_prompts = sample_dataset(300, seed=5, caption_noise=0.3)
    assert noisy_prompts == prompts                       # the captions describe the unflawed scenes
    flawed = np.array([not np.array_equal(a, b) for a, b in zip(clean, noisy)])
    # binomial(300, 0.3): mean 90, sd 7.9; +-4 sd
    assert 58 <= flawed.sum() <= 122
    # unflawed images are pixel-identical; flawed ones are judged wrong against their own caption
    fid_clean = judge(clean[flawed], [p for p, f in zip(prompts, flawed) if f])["fidelity"]
    fid_flawed = judge(noisy[flawed], [p for p, f in zip(prompts, flawed) if f])["fidelity"]
    assert fid_clean.mean() > 0.9 and fid_flawed.mean() < 0.55
    assert (fid_flawed < fid_clean - 0.2).mean() > 0.95


@pytest.mark.parametrize("kind,part", [("colour", "colour"), ("background", "background"), ("count", "count")])
def test_flaw_scene_breaks_exactly_the_named_part(kind, part):
    from imgpref.world.judge import judge
    from imgpref.world.scenes import flaw_scene

    rng = np.random.default_rng(1)
    for _ in range(20):
        scene = sample_scene(rng)
        bad = flaw_scene(scene, kind, rng)
        j = judge(np.stack([render(scene), render(bad)]), caption(scene))
        assert j[part][0] > 0.8 and j[part][1] < 0.2, (kind, caption(scene), j[part])
        spec, bspec = scene.spec, bad.spec
        changed = {k for k in ("count", "colour", "shape", "background") if getattr(spec, k) != getattr(bspec, k)}
        assert changed == {kind}
        assert bspec.colour != bspec.background           # flawed objects stay visible


def test_caption_noise_out_of_range_is_a_value_error_naming_it():
    with pytest.raises(ValueError, match="caption_noise"):
        sample_dataset(4, seed=0, caption_noise=1.0)
    from imgpref.world.scenes import flaw_scene

    with pytest.raises(ValueError, match="'shape'"):
        flaw_scene(sample_scene(np.random.default_rng(0)), "shape", np.random.default_rng(0))
