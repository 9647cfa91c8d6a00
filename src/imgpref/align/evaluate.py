"""Before/after evaluation of an aligned pipeline against its base: same prompts, same seeds, same sampler.

For every prompt and seed both pipelines generate one image (`imgpref.align.generate`, so the initial noise is
identical), every image is scored (`imgpref.align.rewards`; with several scorers the z-scores are taken over
base and aligned images together, so both are judged on one scale), and each (prompt, seed) is a comparison:
aligned wins 1, tie 0.5, loses 0. The win rate is the mean over comparisons; its 95% interval is a percentile
bootstrap that resamples prompts (all seeds of a prompt move together, since they share the prompt's
difficulty). Writes `metrics.json`, `grid.png` (rows = prompts, columns = base / aligned) and `report.html`
(self-contained: images embedded as base64 data URIs) to `out`.
"""
from __future__ import annotations

import base64
import copy
import html
import io
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from imgpref.align.generate import DEFAULT_GUIDANCE, DEFAULT_STEPS, Generations, generate_images, load_pipeline, to_pil
from imgpref.align.rewards import combine_rewards, resolve_scorers, resolve_weights, score_images

LORA_FILE = "pytorch_lora_weights.safetensors"


# ------------------------------------------------------------------------------------------------ statistics
def comparison_outcomes(reward_aligned: np.ndarray, reward_base: np.ndarray) -> np.ndarray:
    """1 where aligned > base, 0.5 on exact ties, 0 where aligned < base (same shape as the inputs)."""
    a, b = np.asarray(reward_aligned, dtype=np.float64), np.asarray(reward_base, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"reward arrays differ in shape: {a.shape} vs {b.shape}")
    return np.where(a > b, 1.0, np.where(a == b, 0.5, 0.0))


def bootstrap_win_rate(
    outcomes: np.ndarray, *, n_boot: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """(win rate, low, high) for outcomes [n_prompts, n_seeds]: percentile bootstrap resampling prompts."""
    o = np.asarray(outcomes, dtype=np.float64)
    if o.ndim != 2 or o.shape[0] == 0 or o.shape[1] == 0:
        raise ValueError(f"outcomes must be [n_prompts, n_seeds] with both > 0; got shape {o.shape}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1); got {level}")
    per_prompt = o.mean(axis=1)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, per_prompt.size, size=(int(n_boot), per_prompt.size))
    boots = per_prompt[idx].mean(axis=1)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(boots, [alpha, 1 - alpha])
    return float(per_prompt.mean()), float(lo), float(hi)


# ------------------------------------------------------------------------------------------------ loading
def detect_aligned_format(aligned: str | os.PathLike) -> tuple[str, Path]:
    """What an aligned folder holds: ("lora", dir) with pytorch_lora_weights.safetensors, ("unet", dir) for a
    UNet saved with save_pretrained (the folder itself or its `unet/`), or ("pipeline", dir) for a whole
    pipeline folder. An `imgpref align` run folder is looked into (`aligned/`)."""
    root = Path(aligned)
    if not root.is_dir():
        raise FileNotFoundError(f"aligned folder {str(root)!r} does not exist; pass the output of `imgpref align`")
    for d in (root, root / "aligned"):
        if (d / LORA_FILE).is_file():
            return "lora", d
        if (d / "model_index.json").is_file():
            return "pipeline", d
        if (d / "unet" / "config.json").is_file():
            return "unet", d / "unet"
        if (d / "transformer" / "config.json").is_file():  # a fully fine-tuned SD3 / FLUX transformer
            return "transformer", d / "transformer"
        if (d / "config.json").is_file() and any(d.glob("diffusion_pytorch_model*")):
            return "unet", d
    raise FileNotFoundError(
        f"{str(root)!r} holds no aligned weights: expected {LORA_FILE} (LoRA), unet/config.json (full UNet) or "
        "model_index.json (pipeline); pass the folder written by `imgpref align` (or its aligned/ subfolder)"
    )


def load_aligned(aligned: Any, base: Any, *, device: str | None = None) -> Any:
    """The aligned pipeline: an object as is, or a folder applied with plain diffusers calls to a copy of `base`
    (`load_lora_weights` for LoRA, a UNet swap for a full fine-tune); `base` itself is never modified."""
    if not isinstance(aligned, (str, os.PathLike)):
        return aligned
    kind, d = detect_aligned_format(aligned)
    if kind == "pipeline":
        return load_pipeline(str(d), device=device)
    pipe = copy.deepcopy(base)
    if kind == "lora":
        # weight_name: diffusers 0.34 refuses a folder without it when HF_HUB_OFFLINE is set
        pipe.load_lora_weights(str(d), weight_name=LORA_FILE)
    elif kind == "transformer":
        net = type(pipe.transformer).from_pretrained(str(d), torch_dtype=pipe.transformer.dtype)
        pipe.register_modules(transformer=net.to(pipe.transformer.device))
    else:
        from diffusers import UNet2DConditionModel

        unet = UNet2DConditionModel.from_pretrained(str(d), torch_dtype=pipe.unet.dtype)
        pipe.register_modules(unet=unet.to(pipe.unet.device))
    return pipe


# ------------------------------------------------------------------------------------------------ reports
def _cell(img: torch.Tensor, size: int) -> Image.Image:
    im = to_pil(img)
    if im.size != (size, size):
        # Nearest for upscaling tiny test images (keeps pixels visible), bicubic for downscaling big ones.
        im = im.resize((size, size), Image.NEAREST if im.size[0] < size else Image.BICUBIC)
    return im


def make_grid(
    base: torch.Tensor, aligned: torch.Tensor, prompts: Sequence[str], *, cell: int = 128, label_width: int = 220
) -> Image.Image:
    """Before/after grid: one row per prompt (its text on the left), columns base | aligned."""
    n = base.shape[0]
    header = 20
    grid = Image.new("RGB", (label_width + 2 * cell + 12, header + n * (cell + 4)), "white")
    draw = ImageDraw.Draw(grid)
    draw.text((label_width + 4, 4), "base", fill="black")
    draw.text((label_width + cell + 8, 4), "aligned", fill="black")
    for r in range(n):
        y = header + r * (cell + 4)
        text = prompts[r] if len(prompts[r]) <= 34 else prompts[r][:33] + "..."
        draw.text((4, y + cell // 2 - 6), text, fill="black")
        grid.paste(_cell(base[r], cell), (label_width + 4, y))
        grid.paste(_cell(aligned[r], cell), (label_width + cell + 8, y))
    return grid


def _data_uri(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def write_html(path: Path, result: "EvalResult", gb: Generations, ga: Generations, rb: np.ndarray, ra: np.ndarray,
               cell: int = 128) -> None:
    """A self-contained page: summary numbers, then every comparison with both images and rewards."""
    rows = []
    for j in range(len(gb)):
        outcome = "aligned" if ra[j] > rb[j] else ("tie" if ra[j] == rb[j] else "base")
        rows.append(
            f"<tr><td>{html.escape(gb.prompts[j])}</td><td>{gb.seeds[j]}</td>"
            f"<td><img src='{_data_uri(_cell(gb.images[j], cell))}' width='{cell}'></td>"
            f"<td><img src='{_data_uri(_cell(ga.images[j], cell))}' width='{cell}'></td>"
            f"<td>{rb[j]:.5g}</td><td>{ra[j]:.5g}</td><td>{outcome}</td></tr>"
        )
    r = result
    per = "".join(
        f"<li>{html.escape(k)}: base {v['base_mean']:.5g}, aligned {v['aligned_mean']:.5g}, "
        f"win rate {v['win_rate']:.3f}</li>" for k, v in r.per_scorer.items()
    )
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>imgpref align eval</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px;text-align:center}} img{{image-rendering:pixelated}}</style></head>
<body><h1>Aligned vs base</h1>
<p><b>Win rate of aligned over base: {r.win_rate:.3f}</b> (95% bootstrap interval over prompts
{r.ci_low:.3f} to {r.ci_high:.3f}; ties count half) from {r.n_comparisons} comparisons
({r.n_prompts} prompts x {r.n_seeds} seeds): {r.wins} wins, {r.ties} ties, {r.losses} losses.</p>
<p>Reward: {html.escape(r.reward_definition)}</p><ul>{per}</ul>
<table><tr><th>prompt</th><th>seed</th><th>base</th><th>aligned</th><th>base reward</th><th>aligned reward</th>
<th>winner</th></tr>
{''.join(rows)}
</table></body></html>
"""
    from imgpref.atomic import atomic_write

    with atomic_write(path) as tmp:
        tmp.write_text(page, encoding="utf-8")


# ------------------------------------------------------------------------------------------------ the protocol
@dataclass
class EvalResult:
    """Numbers and files of one before/after evaluation (all also in metrics.json)."""

    win_rate: float
    ci_low: float
    ci_high: float
    n_prompts: int
    n_seeds: int
    n_comparisons: int
    wins: int
    ties: int
    losses: int
    mean_reward_base: float
    mean_reward_aligned: float
    reward_definition: str
    per_scorer: dict[str, dict[str, float]] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        return (f"win rate {self.win_rate:.3f} [{self.ci_low:.3f}, {self.ci_high:.3f}] over {self.n_comparisons} "
                f"comparisons ({self.wins} W / {self.ties} T / {self.losses} L); mean reward "
                f"{self.mean_reward_base:.5g} -> {self.mean_reward_aligned:.5g}")


def evaluate_alignment(
    base: Any,
    aligned: Any,
    prompts: Sequence[str],
    scorers: Sequence[Any] | Any,
    out: str | os.PathLike | None = None,
    *,
    weights: Sequence[float] | None = None,
    seeds: int = 4,
    base_seed: int = 1_000_000,
    batch_size: int = 8,
    num_inference_steps: int = DEFAULT_STEPS,
    guidance_scale: float = DEFAULT_GUIDANCE,
    height: int | None = None,
    width: int | None = None,
    device: str | None = None,
    n_boot: int = 2000,
    grid_rows: int = 16,
    progress: bool = False,
) -> EvalResult:
    """Generate with base and aligned from the same seeds, score, and report the win rate (module doc).

    base: a pipeline object or spec ("tiny", folder). aligned: a pipeline object, or an `imgpref align` output
    folder (LoRA or full UNet, detected) applied to a copy of base. seeds: images per prompt (seed of image k
    of prompt i: base_seed + i * seeds + k; the default base_seed keeps evaluation seeds away from the small
    seeds `imgpref align pairs` uses by default).
    """
    prompts = [str(p) for p in prompts]
    if not prompts:
        raise ValueError("no prompts to evaluate on; pass --prompts FILE")
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1; got {seeds}")
    scorers = resolve_scorers(scorers)
    w = resolve_weights(weights, len(scorers))
    base_pipe = load_pipeline(base, device=device)
    aligned_pipe = load_aligned(aligned, base_pipe, device=device)
    if aligned_pipe is base_pipe:
        raise ValueError("base and aligned are the same pipeline object; pass two pipelines (or an aligned folder)")
    gen_kwargs = dict(base_seed=base_seed, batch_size=batch_size, num_inference_steps=num_inference_steps,
                      guidance_scale=guidance_scale, height=height, width=width, progress=progress)
    gb = generate_images(base_pipe, prompts, seeds, **gen_kwargs)
    ga = generate_images(aligned_pipe, prompts, seeds, **gen_kwargs)

    sb = score_images(scorers, gb.images, gb.prompts)
    sa = score_images(scorers, ga.images, ga.prompts)
    n = len(gb)
    # Combine over base and aligned together: one z-scale for both sides of every comparison.
    both = combine_rewards({k: np.concatenate([sb[k], sa[k]]) for k in sb}, w)
    rb, ra = both[:n], both[n:]
    outcomes = comparison_outcomes(ra, rb).reshape(len(prompts), seeds)
    rate, lo, hi = bootstrap_win_rate(outcomes, n_boot=n_boot)
    per_scorer = {}
    for k in sb:
        o = comparison_outcomes(sa[k], sb[k])
        per_scorer[k] = {"base_mean": float(sb[k].mean()), "aligned_mean": float(sa[k].mean()), "win_rate": float(o.mean())}
    definition = (f"{list(sb)[0]} (raw, higher is better after sign)" if len(sb) == 1 else
                  "weighted sum of z-scores of " + ", ".join(f"{k} x {wi:g}" for k, wi in zip(sb, w)))
    result = EvalResult(
        win_rate=rate, ci_low=lo, ci_high=hi, n_prompts=len(prompts), n_seeds=seeds, n_comparisons=n,
        wins=int((outcomes == 1).sum()), ties=int((outcomes == 0.5).sum()), losses=int((outcomes == 0).sum()),
        mean_reward_base=float(rb.mean()), mean_reward_aligned=float(ra.mean()), reward_definition=definition,
        per_scorer=per_scorer,
        settings={**gb.settings, "seeds": seeds, "n_boot": n_boot, "weights": [float(x) for x in w],
                  "aligned": str(aligned) if isinstance(aligned, (str, os.PathLike)) else type(aligned).__name__,
                  "base": str(base) if isinstance(base, (str, os.PathLike)) else type(base).__name__},
    )
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        # Grid: the first seed of each prompt (up to grid_rows prompts).
        rows = [i * seeds for i in range(min(len(prompts), grid_rows))]
        make_grid(gb.images[rows], ga.images[rows], [prompts[i] for i in range(len(rows))]).save(out / "grid.png")
        result.files = {"metrics": str(out / "metrics.json"), "grid": str(out / "grid.png"), "html": str(out / "report.html")}
        write_html(out / "report.html", result, gb, ga, rb, ra)
        per_image = [{"prompt": gb.prompts[j], "seed": gb.seeds[j], "reward_base": float(rb[j]),
                      "reward_aligned": float(ra[j])} for j in range(n)]
        from imgpref.atomic import atomic_write

        with atomic_write(out / "metrics.json") as tmp:
            tmp.write_text(json.dumps({**asdict(result), "comparisons": per_image}, indent=2))
    return result
