"""A second rendering-preference generator, independent of `imgpref data synth`, to check the tiny recipe on
data it was not tuned on: other photos and crops, other edit ranges and image size, another utility function.

Scene = a random crop of a photo that ships with scikit-image / scikit-learn (optionally mirrored, rotated and
gamma-shifted so scenes differ). Six renderings per scene with global edits (exposure gain, contrast around the
mean, saturation, white balance, tone curve), all 15 pairs, 25 annotators answering left/right/equal under a
Davidson model with annotator-specific temperature and a per-annotator bias towards warm/bright images.
The latent utility is a function of global statistics of the rendered image (not of the edit parameters).

    python benchmarks/tiny_rendering_altgen.py --out DIR --scenes 100 --seed 1 [--size 96x128]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image


def _photos() -> list[np.ndarray]:
    import skimage.data as sd
    from sklearn.datasets import load_sample_images

    names = ["astronaut", "chelsea", "coffee", "rocket", "camera", "horse", "moon", "retina", "brick", "grass",
             "gravel", "coins", "motorcycle_left", "immunohistochemistry"]
    out = []
    for n in names:
        try:
            im = getattr(sd, n)()
        except Exception:  # noqa: BLE001 - some images may be missing in a given scikit-image install
            continue
        im = np.asarray(im)
        if im.dtype == bool:
            im = im.astype(np.uint8) * 255
        if im.ndim == 2:
            im = np.stack([im] * 3, -1)
        im = im[..., :3].astype(np.float64)
        out.append(im / max(im.max(), 1.0))
    out += [np.asarray(i, dtype=np.float64) / 255.0 for i in load_sample_images().images]
    return out


def _luma(x: np.ndarray) -> np.ndarray:
    return x @ np.array([0.299, 0.587, 0.114])


def render(x: np.ndarray, ev: float, contrast: float, sat: float, wb: float, tone: float) -> np.ndarray:
    """Global edits on linear-ish RGB in [0, 1]."""
    y = x * (2.0 ** ev)
    y = y * np.array([1.0 + wb, 1.0, 1.0 - wb])  # warm (wb > 0) / cool (wb < 0) cast
    m = _luma(y).mean()
    y = m + (y - m) * contrast
    lum = _luma(y)[..., None]
    y = lum + (y - lum) * sat
    y = np.clip(y, 0.0, 1.0) ** tone
    return np.clip(y, 0.0, 1.0)


def utility(y: np.ndarray) -> float:
    """Preference of a rendering from its global statistics (peaks at a balanced, vivid, neutral image)."""
    lum = _luma(y)
    mean, std = lum.mean(), lum.std()
    clip = float(((lum > 0.98) | (lum < 0.02)).mean())
    chroma = np.sqrt(((y - lum[..., None]) ** 2).sum(-1)).mean()
    cast = abs(y[..., 0].mean() - y[..., 2].mean())
    return float(-8.0 * (mean - 0.47) ** 2 / 0.04 * 0.25 - 30.0 * (std - 0.24) ** 2 - 6.0 * clip
                 - 40.0 * (chroma - 0.12) ** 2 - 5.0 * cast)


def generate(out: str | Path, scenes: int = 100, seed: int = 0, size: tuple[int, int] = (96, 128),
             votes: int = 25, fmt: str = "csv") -> Path:
    """Write images, `manifest.<fmt>` and `utilities.csv` into `out`; returns the manifest path."""
    rng = np.random.default_rng(seed)
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    photos = _photos()
    h, w = size
    rows, utils = [], []
    n_train, n_val = int(round(scenes * 0.6)), int(round(scenes * 0.2))
    order = rng.permutation(scenes)
    split_of = {int(s): ("train" if i < n_train else "val" if i < n_train + n_val else "test")
                for i, s in enumerate(order)}
    for s in range(scenes):
        photo = photos[rng.integers(len(photos))]
        ph, pw = photo.shape[:2]
        scale = rng.uniform(0.35, 1.0)
        ch, cw = int(min(ph, pw * h / w) * scale), int(min(pw, ph * w / h) * scale)
        top, left = rng.integers(0, ph - ch + 1), rng.integers(0, pw - cw + 1)
        crop = photo[top:top + ch, left:left + cw]
        img = np.asarray(Image.fromarray((crop * 255).astype(np.uint8)).resize((w, h), Image.BICUBIC),
                         dtype=np.float64) / 255.0
        if rng.random() < 0.5:
            img = img[:, ::-1]
        img = np.clip(img, 0, 1) ** rng.uniform(0.8, 1.25)  # scenes start from different base exposures
        scene_utils, paths = [], []
        for r in range(6):
            params = dict(ev=rng.uniform(-1.2, 1.0), contrast=rng.uniform(0.55, 1.6), sat=rng.uniform(0.2, 1.9),
                          wb=rng.uniform(-0.22, 0.22), tone=rng.uniform(0.7, 1.4))
            if r == 0:
                params = dict(ev=0.0, contrast=1.0, sat=1.0, wb=0.0, tone=1.0)
            y = render(img, **params)
            name = f"images/s{s:03d}_r{r}.png"
            Image.fromarray((y * 255).round().astype(np.uint8)).save(out / name)
            u = utility(y)
            scene_utils.append(u)
            paths.append(name)
            utils.append({"image": name, "utility": u, "scene": f"s{s:03d}", **params})
        for a in range(6):
            for b in range(a + 1, 6):
                i0, i1 = (a, b) if rng.random() < 0.5 else (b, a)
                d = 0.6 * (scene_utils[i0] - scene_utils[i1])
                temp = rng.lognormal(0.0, 0.35, size=votes)  # annotator heterogeneity
                dd = d / temp + rng.normal(0, 0.3, size=votes)
                nu = 0.5
                p0, p1, pt = np.exp(dd / 2), np.exp(-dd / 2), nu * np.ones_like(dd)
                z = p0 + p1 + pt
                u_ = rng.random(votes)
                v0 = int((u_ < p0 / z).sum())
                vt = int(((u_ >= p0 / z) & (u_ < (p0 + pt) / z)).sum())
                rows.append({"image_0": paths[i0], "image_1": paths[i1], "votes_0": v0, "votes_1": votes - v0 - vt,
                             "votes_tie": vt, "prompt": "", "group": f"s{s:03d}", "split": split_of[s]})
    manifest = out / f"manifest.{fmt}"
    df = pd.DataFrame(rows)
    if fmt == "csv":
        df.to_csv(manifest, index=False)
    else:
        df.to_json(manifest, orient="records", lines=True)
    pd.DataFrame(utils).to_csv(out / "utilities.csv", index=False)
    return manifest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--scenes", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", default="96x128", help="HxW")
    a = ap.parse_args()
    h, w = (int(v) for v in a.size.lower().split("x"))
    print(generate(a.out, a.scenes, a.seed, (h, w)))


if __name__ == "__main__":
    main()
