"""Synthetic DEAR-style rendering-preference data built from real photos that ship with installed packages.

Each scene is a random crop of a bundled photo (skimage.data, sklearn sample images), rendered 6 ways with
global edits (exposure, contrast, saturation, white balance, tone curve); "original" is the unedited crop.
A rendering's latent utility is a smooth function of global image statistics of the stored 8-bit image
(mean luminance and contrast near a pleasing target, little clipping, moderate colourfulness, no colour cast)
plus a small per-rendering taste term. All 15 pairs of a scene get 25 votes from simulated annotators who
answer left / right / equal by a threshold model: d = scale_a * (u_left - u_right) + bias_a + noise, "equal"
when |d| < tau_a. Everything is deterministic given the seed.
"""
from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass
from functools import lru_cache
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd

from imgpref.atomic import atomic_write
from imgpref.data.manifest import write_manifest

RENDERINGS = ("original", "expert_a", "expert_b", "expert_c", "expert_d", "expert_e")
_LUMA = np.array([0.299, 0.587, 0.114])


@dataclass(frozen=True)
class SynthConfig:
    """Knobs of the generator; the defaults give oracle majority accuracy ~0.9 and ~15% tie votes."""

    size: int = 64                  # rendered image side (px)
    votes_per_pair: int = 25
    n_annotators: int = 200         # pool the 25 voters of each pair are drawn from
    noise: float = 1.0              # sd of the per-vote Gaussian noise (utility units)
    tau: float = 0.25               # "equal" threshold on the noisy difference
    scale_sd: float = 0.35          # log-sd of annotator sensitivity (heterogeneity)
    bias_sd: float = 0.25           # sd of annotator left/right bias
    taste_sd: float = 0.1           # sd of the per-rendering taste term not explained by image statistics
    utility_scale: float = 0.5      # multiplies the image-statistics part of the utility
    split_fractions: tuple[float, float, float] = (0.70, 0.15, 0.15)


_PHOTO_FILES = (
    ("skimage", "data", ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "camera.png")),
    ("sklearn", "datasets/images", ("china.jpg", "flower.jpg")),
)


@lru_cache(maxsize=1)
def source_photos() -> dict[str, np.ndarray]:
    """Bundled RGB uint8 photos: skimage.data (astronaut, chelsea, coffee, rocket, camera) + sklearn samples.

    The files are read straight from the installed packages' data folders (importing sklearn alone takes
    seconds); grey photos become RGB.
    """
    import importlib.util

    from PIL import Image

    photos: dict[str, np.ndarray] = {}
    for package, folder, files in _PHOTO_FILES:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            continue
        root = Path(list(spec.submodule_search_locations)[0]) / folder
        for fname in files:
            path = root / fname
            if not path.is_file():
                continue
            with Image.open(path) as im:
                photos[Path(fname).stem] = np.asarray(im.convert("RGB"), dtype=np.uint8)
    if not photos:
        raise RuntimeError("no bundled photos found: install scikit-image (skimage.data) or scikit-learn")
    return photos


def _crop(photo: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A random square crop (35-80% of the short side) resized to size x size, as floats in [0, 1]."""
    from PIL import Image

    h, w = photo.shape[:2]
    side = int(rng.uniform(0.35, 0.8) * min(h, w))
    top = int(rng.integers(0, h - side + 1))
    left = int(rng.integers(0, w - side + 1))
    patch = Image.fromarray(photo[top:top + side, left:left + side])
    patch = patch.resize((size, size), Image.Resampling.BICUBIC, reducing_gap=2.0)
    return np.asarray(patch, dtype=np.float64) / 255.0


def draw_edit(rng: np.random.Generator) -> dict[str, float]:
    """Random global edit parameters for one rendering."""
    return {
        "exposure": float(rng.normal(0.0, 0.7)),            # stops, applied in linear light
        "contrast": float(np.exp(rng.normal(0.0, 0.35))),   # slope around mid-grey
        "saturation": float(np.exp(rng.normal(0.0, 0.5))),  # chroma gain around luminance
        "temperature": float(rng.normal(0.0, 0.10)),        # red up / blue down (white balance)
        "tint": float(rng.normal(0.0, 0.05)),               # green up / magenta
        "gamma": float(np.exp(rng.normal(0.0, 0.25))),      # tone curve x ** gamma
    }


def apply_edit(img: np.ndarray, edit: dict[str, float]) -> np.ndarray:
    """Apply global edits to a float RGB image in [0, 1]; returns uint8."""
    lin = np.clip(img, 0, 1) ** 2.2
    lin = lin * (2.0 ** edit["exposure"])
    gains = np.array([1.0 + edit["temperature"], 1.0 + edit["tint"], 1.0 - edit["temperature"]])
    lin = lin * gains
    x = np.clip(lin, 0, 1) ** (1 / 2.2)
    x = (x - 0.5) * edit["contrast"] + 0.5
    luma = (x @ _LUMA)[..., None]
    x = luma + edit["saturation"] * (x - luma)
    x = np.clip(x, 0, 1) ** edit["gamma"]
    return np.round(np.clip(x, 0, 1) * 255).astype(np.uint8)


def image_statistics(img: np.ndarray) -> dict[str, float]:
    """Global statistics the utility depends on (img: uint8 or float RGB)."""
    x = np.asarray(img, dtype=np.float64)
    if x.max() > 1.0:
        x = x / 255.0
    luma = x @ _LUMA
    means = x.reshape(-1, 3).mean(axis=0)
    return {
        "mean_luma": float(luma.mean()),
        "std_luma": float(luma.std()),
        "clipped": float(np.mean((x.max(axis=-1) >= 0.99) | (luma <= 0.02))),
        "chroma": float(np.mean(x.max(axis=-1) - x.min(axis=-1))),
        "cast": float(np.hypot(means[0] - means[1], means[2] - means[1])),
    }


def quality(img: np.ndarray) -> float:
    """The image-statistics part of the utility: 0 is ideal, lower is worse (smooth in the statistics)."""
    s = image_statistics(img)
    # log1p keeps penalties bounded, so wildly bad renderings do not dominate and close pairs stay common.
    z = {
        "exposure": (s["mean_luma"] - 0.47) / 0.10,
        "contrast": (s["std_luma"] - 0.22) / 0.07,
        "clipping": s["clipped"] / 0.10,
        "colour": (s["chroma"] - 0.22) / 0.10,
        "cast": s["cast"] / 0.08,
    }
    weights = {"exposure": 1.0, "contrast": 0.6, "clipping": 0.5, "colour": 0.5, "cast": 0.6}
    return -float(sum(w * np.log1p(z[k] ** 2) for k, w in weights.items()))


def _split_scenes(n: int, fractions: tuple[float, float, float], rng: np.random.Generator) -> list[str]:
    n_val = int(round(fractions[1] * n))
    n_test = int(round(fractions[2] * n))
    if n >= 3:
        n_val, n_test = max(n_val, 1), max(n_test, 1)
    elif n == 2:
        n_val, n_test = 0, 1
    else:
        n_val, n_test = 0, 0
    labels = ["test"] * n_test + ["val"] * n_val + ["train"] * (n - n_val - n_test)
    order = rng.permutation(n)
    out = [""] * n
    for pos, scene in enumerate(order):
        out[scene] = labels[pos]
    return out


def oracle_summary(manifest: pd.DataFrame, utilities: dict[tuple[str, str], float]) -> dict[str, float]:
    """Oracle accuracy vs majority (q = 0.5 excluded), human ceiling mean(max(q, 1 - q)), tie share."""
    v = manifest[["votes_0", "votes_1", "votes_tie"]].to_numpy(dtype=np.float64)
    q = (v[:, 0] + 0.5 * v[:, 2]) / v.sum(axis=1)
    u0 = np.array([utilities[k] for k in manifest["image_0"]])
    u1 = np.array([utilities[k] for k in manifest["image_1"]])
    decided = q != 0.5
    correct = (u0 > u1) == (q > 0.5)
    return {
        "n_pairs": int(len(q)),
        "oracle_accuracy": float(correct[decided].mean()) if decided.any() else float("nan"),
        "human_ceiling": float(np.mean(np.maximum(q, 1 - q))) if len(q) else float("nan"),
        "tie_share": float(v[:, 2].sum() / v.sum()) if len(q) else float("nan"),
    }


def make_rendering_dataset(
    out: str | Path, scenes: int = 60, seed: int = 0, *, size: int | None = None, config: SynthConfig | None = None
) -> dict:
    """Write a DEAR-style set under `out` (images/, manifest.csv, utilities.csv, votes.csv); return a summary."""
    if scenes < 1:
        raise ValueError(f"scenes must be at least 1, got {scenes}")
    cfg = config or SynthConfig()
    if size is not None:
        cfg = SynthConfig(**{**asdict(cfg), "size": int(size)})
    if cfg.size < 8:
        raise ValueError(f"size must be at least 8 px, got {cfg.size}")
    from PIL import Image

    out = Path(out).resolve()
    image_root = out / "images"
    image_root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    photos = source_photos()
    names = sorted(photos)
    scales = np.exp(rng.normal(0.0, cfg.scale_sd, cfg.n_annotators))
    biases = rng.normal(0.0, cfg.bias_sd, cfg.n_annotators)
    taus = cfg.tau * np.exp(rng.normal(0.0, 0.3, cfg.n_annotators))
    splits = _split_scenes(scenes, cfg.split_fractions, rng)
    # Cycle through the photos in a shuffled order so scenes spread evenly over them.
    photo_order = [names[i % len(names)] for i in range(scenes)]
    rng.shuffle(photo_order)

    rows, util_rows, vote_rows = [], [], []
    utilities: dict[str, float] = {}
    for s in range(scenes):
        scene = f"scene_{s:04d}"
        base = _crop(photos[photo_order[s]], cfg.size, rng)
        (image_root / scene).mkdir(exist_ok=True)
        paths, utils = [], []
        for r, name in enumerate(RENDERINGS):
            img = np.round(base * 255).astype(np.uint8) if r == 0 else apply_edit(base, draw_edit(rng))
            path = image_root / scene / f"{name}.png"
            with atomic_write(path) as tmp:
                Image.fromarray(img).save(tmp, format="PNG", optimize=False, compress_level=1)
            u = cfg.utility_scale * quality(img) + rng.normal(0.0, cfg.taste_sd)
            rel = path.relative_to(out).as_posix()
            paths.append(rel)
            utils.append(u)
            utilities[str(path)] = u
            util_rows.append({"scene": scene, "rendering": name, "image": rel, "utility": round(float(u), 6),
                              "photo": photo_order[s], "split": splits[s]})
        for i, j in combinations(range(len(RENDERINGS)), 2):
            if rng.random() < 0.5:  # random side so position carries no information
                i, j = j, i
            voters = rng.choice(cfg.n_annotators, size=cfg.votes_per_pair, replace=False)
            d = scales[voters] * (utils[i] - utils[j]) + biases[voters] + rng.normal(0, cfg.noise, len(voters))
            choice = np.where(np.abs(d) < taus[voters], "equal", np.where(d > 0, "left", "right"))
            rows.append({"image_0": str(out / paths[i]), "image_1": str(out / paths[j]),
                         "votes_0": int((choice == "left").sum()), "votes_1": int((choice == "right").sum()),
                         "votes_tie": int((choice == "equal").sum()), "prompt": "", "group": scene,
                         "annotator": "", "split": splits[s]})
            for a, c in zip(voters, choice):
                vote_rows.append((scene, RENDERINGS[i], RENDERINGS[j], c, f"sim_{a:04d}", splits[s]))

    manifest = pd.DataFrame(rows)
    summary = {"out": str(out), "scenes": scenes, "seed": seed, "size": cfg.size, "renderings": len(RENDERINGS),
               "votes_per_pair": cfg.votes_per_pair}
    summary.update(oracle_summary(manifest, utilities))
    summary["splits"] = {}
    for split in ("train", "val", "test"):
        part = manifest[manifest["split"] == split]
        if len(part):
            summary["splits"][split] = {"scenes": int(part["group"].nunique()), **oracle_summary(part, utilities)}
    write_manifest(manifest, out / "manifest.csv")
    with atomic_write(out / "utilities.csv") as tmp:
        pd.DataFrame(util_rows).to_csv(tmp, index=False)
    with atomic_write(out / "votes.csv") as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["scene", "left", "right", "choice", "annotator", "split"])
        writer.writerows(vote_rows)
    summary["config"] = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()}
    with atomic_write(out / "synth_summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2))
    return summary


def load_utilities(out: str | Path) -> dict[str, float]:
    """utilities.csv of a synth folder as {absolute image path: utility}."""
    out = Path(out)
    table = pd.read_csv(out / "utilities.csv")
    return {str((out / p).resolve()): float(u) for p, u in zip(table["image"], table["utility"])}
