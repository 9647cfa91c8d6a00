"""How far does `imgpref score --fast` move scores from the reference-exact default? CPU, about a minute.

The bundled photos (scikit-image astronaut, chelsea, coffee, rocket; scikit-learn china, flower) are saved as
1024-pixel JPEGs (quality 90) and scored by every published preset with tiny random weights in the published
layouts, but at the published input resolution (224 px, so reduced-size decoding picks the same 1/2 scale as for
the real ViT-H/14 and ViT-L/14: 1024 -> 512 >= 2 x 224):

- draft: `score_paths(fast=True)` against the default (full-size decoding), both float32 on CPU;
- bf16: the default decoding, autocast bf16 on the CPU against float32 (on CUDA, `--fast` uses bf16 autocast;
  CPU autocast rounds the same matmuls to bf16 but uses other kernels, so treat it as an estimate);
- input: max |difference| of the model input (the normalised pixels) between drafted and full-size decoding,
  in [0, 1] pixel units (mean/std undone), which does not depend on the random weights.

Random tiny weights make the score deviations indicative only: a trained model's sensitivity differs. Scores are
reported in each preset's own units (HPS: 100 * cos; PickScore: logit_scale * cos with logit_scale = e^3 here;
CLIPScore: 2.5 * max(cos, 0); LAION: the MLP's output).

  python benchmarks/fast_deviation.py
"""
from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

SIZE = 224


def photos(folder: Path) -> list[Path]:
    from skimage import data
    from sklearn.datasets import load_sample_images

    arrays = {"astronaut": data.astronaut(), "chelsea": data.chelsea(), "coffee": data.coffee(),
              "rocket": data.rocket()}
    sk = load_sample_images()
    arrays.update({"china": sk.images[0], "flower": sk.images[1]})
    out = []
    for name, arr in arrays.items():
        im = Image.fromarray(arr).convert("RGB")
        scale = 1024 / max(im.size)
        im = im.resize((round(im.width * scale), round(im.height * scale)), Image.BICUBIC)
        out.append(folder / f"{name}.jpg")
        im.save(out[-1], quality=90)
    return out


def scorers(folder: Path):
    """Every published preset, tiny random weights in its published layout, 224-pixel input."""
    from transformers import CLIPImageProcessor

    from imgpref.scorers import tiny_checkpoints as tc
    from imgpref.scorers.registry import load_scorer
    from imgpref.scorers.tiny import TINY_OPEN_CLIP_CONFIG, register_open_clip_config, tiny_open_clip_model

    cfg = copy.deepcopy(TINY_OPEN_CLIP_CONFIG)
    cfg["vision_cfg"].update(image_size=SIZE, patch_size=32)
    arch = register_open_clip_config("imgpref-tiny-vit-224", cfg)
    model, _ = tiny_open_clip_model(0, arch, cfg)
    torch.save({"state_dict": model.state_dict()}, folder / "HPS_v2_compressed.pt")
    torch.save(model.state_dict(), folder / "open_clip_pytorch_model.bin")
    tc.write_tiny_laion_head(folder / "sac+logos+ava1-l14-linearMSE.pth", 32)

    hf_cfg = copy.deepcopy(tc.TINY_HF_CLIP_CONFIG)
    hf_cfg["vision_config"].update(image_size=SIZE, patch_size=32)
    pick = folder / "pickscore"
    tc.tiny_hf_clip(0, hf_cfg).save_pretrained(str(pick))
    CLIPImageProcessor(size={"shortest_edge": SIZE}, crop_size={"height": SIZE, "width": SIZE}).save_pretrained(
        str(pick))
    tc.write_clip_tokenizer(pick)
    oc = folder / "open_clip_pytorch_model.bin"
    return [
        load_scorer("pickscore", weights=pick),
        load_scorer("hpsv2", weights=folder / "HPS_v2_compressed.pt", arch=arch),
        load_scorer("laion-aesthetic", weights=folder / "sac+logos+ava1-l14-linearMSE.pth", arch=arch,
                    backbone_weights=oc),
        load_scorer("clipscore", weights=oc, arch=arch),
    ]


def table(paths, scorer_list, **kw) -> dict[str, np.ndarray]:
    from imgpref.scorers.score_paths import score_paths

    df = score_paths([str(p) for p in paths], scorer_list, prompt="a photo of a cat", num_workers=0,
                     progress=False, device="cpu", **kw)
    return {s.name: df[df.scorer == s.name].set_index("path").loc[[str(p) for p in paths], "score"].to_numpy()
            for s in scorer_list}


def input_deviation(paths, scorer) -> float:
    from imgpref.data.images import load_image
    from imgpref.scorers.score_paths import decode_size

    bb = scorer.backbone
    std = torch.tensor(bb.std).view(3, 1, 1)
    worst = 0.0
    for p in paths:
        full = bb.preprocess(load_image(p))
        draft = bb.preprocess(load_image(p, draft_size=decode_size(bb)))
        worst = max(worst, float(((full - draft) * std).abs().max()))
    return worst


def main() -> None:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = photos(tmp)
        scorer_list = scorers(tmp)
        exact = table(paths, scorer_list)
        fast = table(paths, scorer_list, fast=True)
        try:
            bf16 = table(paths, scorer_list, precision="bf16")
        except Exception as exc:  # noqa: BLE001
            print(f"bf16 autocast on CPU failed: {exc}")
            bf16 = None
        print(f"{len(paths)} photos at 1024 px (JPEG q90), tiny random weights at {SIZE} px, CPU")
        print("| preset | score spread (max - min) | --fast draft: max abs diff | bf16 (CPU autocast): max abs diff "
              "| model input, draft vs full: max abs diff (pixels in [0, 1]) |")
        print("|---|---|---|---|---|")
        for s in scorer_list:
            e = exact[s.name]
            d = np.abs(fast[s.name] - e).max()
            b = f"{np.abs(bf16[s.name] - e).max():.3g}" if bf16 is not None else "not measured"
            print(f"| {s.name} | {e.max() - e.min():.3g} | {d:.3g} | {b} | {input_deviation(paths, s):.3g} |")


if __name__ == "__main__":
    main()
