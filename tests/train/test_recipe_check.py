"""`imgpref.recipes`: one checker for train and align recipes; every key of every section, before anything runs."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from imgpref.recipes import check_align_recipe, check_train_recipe
from imgpref.train.run import apply_overrides, load_recipe

ROOT = Path(__file__).resolve().parents[2]
TINY = load_recipe(ROOT / "configs" / "train" / "tiny_rendering.yaml")


def _with(*overrides: str) -> dict:
    return apply_overrides(TINY, list(overrides))


@pytest.mark.parametrize("path", sorted((ROOT / "configs" / "train").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_train_recipe_passes(path):
    check_train_recipe(load_recipe(path))


@pytest.mark.parametrize("path", sorted((ROOT / "configs" / "align").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_align_recipe_passes(path):
    check_align_recipe(yaml.safe_load(path.read_text()) or {})


# (override, the whole expected message): one line naming the full dotted key, with the closest valid key
@pytest.mark.parametrize("override,message", [
    ("scorer.backbone.pretrainde=openai", "scorer.backbone.pretrainde: unknown key for backbone type 'open_clip' "
                                          "(did you mean 'pretrained'?)"),
    ("seeed=1", "seeed: unknown key (did you mean 'seed'?)"),
    ("scorer.nmae=x", "scorer.nmae: unknown key (did you mean 'name'?)"),
    ("scorer.head.normalise=true", "scorer.head.normalise: unknown key for head type 'linear' "
                                   "(did you mean 'normalize'?)"),
    ("optimizer.weight_decai=0.1", "optimizer.weight_decai: unknown key (did you mean 'weight_decay'?)"),
    ("augment.crop_scal=0.9", "augment.crop_scal: unknown key (did you mean 'crop_scale'?)"),
    ("data.batchsize=8", "data.batchsize: unknown key (did you mean 'batch_size'?)"),
    ("trainer.max_epoch=3", "trainer.max_epoch: unknown key (did you mean 'max_epochs'?)"),
    ("trainer.early_stopping.patiance=3", "trainer.early_stopping.patiance: unknown key (did you mean 'patience'?)"),
    ("trainer.ema.decai=0.9", "trainer.ema.decai: unknown key (did you mean 'decay'?)"),
    ("mode.vision_block=3", "mode.vision_block: unknown key for mode 'full'; valid keys: name"),
    ("loss.tie_ofset=true", "loss.tie_ofset: unknown key for loss 'bt_soft'; valid keys: name, prompt_weighting"),
    ("mode.name=ful", "mode.name: unknown value 'ful' (did you mean 'full'?); use one of head, last_n, lora, full"),
    ("loss.name=bt_sfot", "loss.name: unknown value 'bt_sfot' (did you mean 'bt_soft'?); use one of bt_hard, "
                          "bt_soft, davidson, pickscore, plackett_luce"),
    ("optimizer=0.1", "optimizer: must be a mapping (key: value lines), got float 0.1"),
])
def test_unknown_keys_are_one_line_with_did_you_mean(override, message):
    with pytest.raises(ValueError) as info:
        check_train_recipe(_with(override))
    assert str(info.value) == message


def test_keys_depend_on_head_type_loss_and_mode():
    # a key valid for one type is an error for another: mlp has `hidden`, linear does not
    check_train_recipe(_with("scorer.head={type: mlp, hidden: [8], dropout: 0.0, normalize: true}"))
    with pytest.raises(ValueError, match=r"^scorer.head.hidden: unknown key for head type 'linear'"):
        check_train_recipe(_with("scorer.head={type: linear, hidden: [8]}"))
    check_train_recipe(_with("scorer.head={type: gpm, k: 2}"))
    check_train_recipe(_with("scorer.head={type: cosine, scale: learned}"))
    with pytest.raises(ValueError, match=r"^scorer.head.input_dim: unknown key for head type 'cosine'"):
        check_train_recipe(_with("scorer.head={type: cosine, input_dim: 8}"))
    # davidson reads log_nu, pickscore tie_offset; bt_soft reads neither (its adapter ignored them silently)
    check_train_recipe(_with("loss={name: davidson, log_nu: 0.5}"))
    check_train_recipe(_with("loss={name: pickscore, tie_offset: true, prompt_weighting: false}"))
    with pytest.raises(ValueError, match=r"^loss.log_nu: unknown key for loss 'bt_soft'"):
        check_train_recipe(_with("loss={name: bt_soft, log_nu: 0.5}"))
    check_train_recipe(_with("mode={name: lora, r: 4, alpha: 8, dropout: 0.1}"))
    check_train_recipe(_with("mode={name: last_n, vision_blocks: 1, text_layers: 0}"))
    check_train_recipe(_with("mode={name: head, cache_embeddings: false, cache_dir: null}"))
    check_train_recipe(_with("mode=head"))
    with pytest.raises(ValueError, match=r"^mode.cache_dir: unknown key for mode 'last_n'"):
        check_train_recipe(_with("mode={name: last_n, cache_dir: x}"))
    # hf_clip backbones read source/processor, not open_clip's keys
    hf = copy.deepcopy(TINY)
    hf["scorer"]["backbone"] = {"type": "hf_clip", "source": "x", "model_name": "ViT-B-32"}
    with pytest.raises(ValueError, match=r"^scorer.backbone.model_name: unknown key for backbone type 'hf_clip'"):
        check_train_recipe(hf)
    hf["scorer"]["backbone"] = {"type": "hf-clip", "source": "x"}
    with pytest.raises(ValueError, match=r"^scorer.backbone.type: unknown value 'hf-clip' \(did you mean 'hf_clip'\?\)"):
        check_train_recipe(hf)


def test_every_problem_on_one_line_and_what_the_code_reads_is_accepted():
    with pytest.raises(ValueError) as info:
        check_train_recipe(_with("optimizer.lrr=1", "trainer.devicez=1"))
    msg = str(info.value)
    assert "\n" not in msg
    assert msg == ("optimizer.lrr: unknown key (did you mean 'lr'?); "
                   "trainer.devicez: unknown key (did you mean 'devices'?)")
    # keys read by the code but absent from the shipped recipes are accepted
    check_train_recipe(_with("optimizer.eps=1e-6", "optimizer.max_steps=10", "optimizer.warmup_ratio=0.1",
                             "augment.max_shift=0.1", "data.val_holdout=0.2", "data.preload_max_mb=10",
                             "trainer.limit_val_batches=2", "trainer.ema={decay: 0.9, update_every_n_steps: 2}",
                             "trainer.early_stopping={monitor: val/nll, patience: 2, min_delta: 0.01}",
                             "trainer.early_stopping=null", "calibrate=false", "torch_threads=1"))
    # trainer keys that train() sets itself are refused rather than clashing inside Lightning
    with pytest.raises(ValueError, match=r"^trainer.callbacks: unknown key"):
        check_train_recipe(_with("trainer.callbacks=[]"))
    with pytest.raises(ValueError, match=r"^trainer.ema.decay: must be a number in \(0, 1\)"):
        check_train_recipe(_with("trainer.ema={decay: 1.5}"))


def test_from_preset_refuses_keys_it_would_ignore():
    cfg = copy.deepcopy(TINY)
    cfg["scorer"]["from"] = "some-scorer-folder"
    with pytest.raises(ValueError, match=r"^scorer.backbone: not used with scorer.from"):
        check_train_recipe(cfg)


def _manifest(tmp_path: Path) -> Path:
    path = tmp_path / "m.csv"
    path.write_text("image_0,image_1,votes_0,votes_1,votes_tie\na.png,b.png,1,0,0\n")
    return path


def test_cli_train_typo_exits_2_with_one_line_and_writes_nothing(tmp_path):
    # the reported bug: `pretrainde: openai` silently trained from random weights
    from typer.testing import CliRunner

    from imgpref.cli import app

    recipe = copy.deepcopy(TINY)
    recipe["scorer"]["backbone"]["pretrainde"] = "openai"
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(recipe))
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["train", "--config", str(path), "--data", str(_manifest(tmp_path)),
                                   "--out", str(out)])
    assert res.exit_code == 2
    assert res.stderr.strip() == ("error: scorer.backbone.pretrainde: unknown key for backbone type 'open_clip' "
                                  "(did you mean 'pretrained'?)")
    assert not out.exists()
    # the same through --set
    res = CliRunner().invoke(app, ["train", "--config", str(ROOT / "configs" / "train" / "tiny_rendering.yaml"),
                                   "--data", str(_manifest(tmp_path)), "--out", str(out),
                                   "--set", "trainer.max_epoch=1"])
    assert res.exit_code == 2
    assert res.stderr.strip() == "error: trainer.max_epoch: unknown key (did you mean 'max_epochs'?)"
    assert not out.exists()


def test_align_uses_the_same_checker(tmp_path):
    from typer.testing import CliRunner

    from imgpref.align.train import validate_config
    from imgpref.cli import app

    with pytest.raises(ValueError) as info:
        validate_config({"model": {"bta": 1.0}})
    assert str(info.value) == "model.bta: unknown key (did you mean 'beta'?)"
    with pytest.raises(ValueError, match=r"^export.use_emma: unknown key \(did you mean 'use_ema'\?\)$"):
        check_align_recipe({"export": {"use_emma": True}})
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["align", "--config", str(ROOT / "configs" / "align" / "tiny_dpo.yaml"),
                                   "--out", str(out), "--set", "trainer.max_stepz=2"])
    assert res.exit_code == 2
    assert res.stderr.strip().splitlines()[-1] == "error: trainer.max_stepz: unknown key (did you mean 'max_steps'?)"
    assert not out.exists()
