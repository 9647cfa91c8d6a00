"""The tiny offline pipelines: open_clip-identical tokenizer, determinism, save/load, SDXL time ids, offline errors."""
import pytest
import torch

from imgpref.align.conditioning import sdxl_time_ids
from imgpref.align.pipeline_io import load_pipeline
from imgpref.align.tiny import TINY_RESOLUTION, build_clip_tokenizer, build_tiny_pipeline, save_tiny_pipeline

torch.set_num_threads(2)


def _gen(pipe, prompts, seed=0, steps=3, **kw):
    pipe.set_progress_bar_config(disable=True)
    return pipe(prompts, num_inference_steps=steps, generator=torch.Generator().manual_seed(seed),
                output_type="pt", **kw).images


def test_tokenizer_matches_open_clip(tmp_path):
    import open_clip

    ours = build_clip_tokenizer(tmp_path)
    ref = open_clip.get_tokenizer("ViT-B-32")
    prompts = ["a photo of a cat", "A Red  CAR, on the road!!", "naïve café 123 don't", "",
               "a " + "very " * 100 + "long prompt"]
    theirs = ref(prompts)  # [5, 77], zero padded, truncated with EOT kept at the end
    for i, p in enumerate(prompts):
        ids = ours(p, padding="max_length", max_length=77, truncation=True).input_ids
        n = int((theirs[i] != 0).sum())
        assert ids[:n] == theirs[i, :n].tolist(), p
    assert ours.model_max_length == 77 and ours.bos_token_id == 49406 and ours.eos_token_id == 49407


def test_tiny_pipeline_is_deterministic_and_saves_offline(tmp_path):
    a, b, c = build_tiny_pipeline(seed=0), build_tiny_pipeline(seed=0), build_tiny_pipeline(seed=1)
    sa = a.unet.state_dict()
    assert all(torch.equal(v, b.unet.state_dict()[k]) for k, v in sa.items())
    assert not all(torch.equal(v, c.unet.state_dict()[k]) for k, v in sa.items())
    img = _gen(a, ["a red cat", "a blue dog"])
    assert img.shape == (2, 3, TINY_RESOLUTION, TINY_RESOLUTION) and 0 <= img.min() and img.max() <= 1
    save_tiny_pipeline(tmp_path / "tiny")
    loaded = load_pipeline(tmp_path / "tiny")  # plain DiffusionPipeline.from_pretrained underneath
    assert type(loaded).__name__ == "StableDiffusionPipeline"
    torch.testing.assert_close(_gen(loaded, ["a red cat", "a blue dog"]), img)


def test_tiny_sdxl_pipeline_generates():
    pipe = build_tiny_pipeline(seed=0, kind="sdxl")
    assert type(pipe).__name__ == "StableDiffusionXLPipeline"
    img = _gen(pipe, ["a cat"], steps=2, height=32, width=32)
    assert img.shape == (1, 3, 32, 32) and torch.isfinite(img).all()


def test_v_prediction_option_and_bad_kind():
    assert build_tiny_pipeline(prediction_type="v_prediction").scheduler.config.prediction_type == "v_prediction"
    with pytest.raises(ValueError, match="kind"):
        build_tiny_pipeline(kind="sd3")


def test_sdxl_time_ids():
    # (orig_h, orig_w, crop_top, crop_left, target_h, target_w)
    assert sdxl_time_ids((768, 1024), (0, 85), (512, 512)).tolist() == [768, 1024, 0, 85, 512, 512]
    with pytest.raises(ValueError):
        sdxl_time_ids((768, 1024), (0,), (512, 512))


def test_offline_hub_id_error_names_model_and_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    with pytest.raises(FileNotFoundError) as exc:
        load_pipeline("stable-diffusion-v1-5/stable-diffusion-v1-5")
    msg = str(exc.value)
    assert "stable-diffusion-v1-5/stable-diffusion-v1-5" in msg and "HF_HUB_OFFLINE" in msg and "local folder" in msg
    with pytest.raises(FileNotFoundError, match="not a folder"):
        load_pipeline(tmp_path / "missing" / "dir")
