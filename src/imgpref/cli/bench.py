"""`imgpref bench`: the accuracy table scorer x dataset from local copies of the standard test sets."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from imgpref.cli.errors import usage_error


def _weights(items: List[str]) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--weights {item!r}: use NAME=PATH (one per scorer)")
        out[name] = path
    return out


def bench_command(
    scorer: List[str] = typer.Option(..., "--scorer", help="Preset name or scorer folder; repeat for several."),
    hpdv2: Optional[Path] = typer.Option(None, "--hpdv2", help="HPD v2 test.json (images beside it or in test/)."),
    hpdv2_images: Optional[Path] = typer.Option(None, "--hpdv2-images", help="Folder of the HPD v2 test images."),
    imagereward: Optional[Path] = typer.Option(None, "--imagereward", help="ImageReward data/test.json."),
    imagereward_images: Optional[Path] = typer.Option(None, "--imagereward-images",
                                                      help="Folder of the ImageReward test images."),
    pickapic: Optional[Path] = typer.Option(None, "--pickapic", help="Pick-a-Pic v2 test shard(s): file or folder."),
    pickapic_unique: Optional[Path] = typer.Option(None, "--pickapic-unique",
                                                   help="Pick-a-Pic v2 test_unique shard(s)."),
    pickapic_val: Optional[Path] = typer.Option(None, "--pickapic-val",
                                                help="Pick-a-Pic validation shard(s): tunes the tie threshold."),
    pickapic_images: Optional[Path] = typer.Option(None, "--pickapic-images",
                                                   help="Downloaded images for the no_images shard layout."),
    hpdv3: Optional[Path] = typer.Option(None, "--hpdv3", help="HPD v3 test.json / .jsonl."),
    out: Path = typer.Option(Path("bench_out"), "--out", help="Output folder (bench.csv, bench.html, manifests/)."),
    weights: List[str] = typer.Option([], "--weights", help="NAME=PATH weights of a preset; repeat."),
    cache: Optional[Path] = typer.Option(None, "--cache", help="Embedding cache folder, shared across datasets and "
                                         "re-runs (default: none; ImageReward's entries are ~1 MB per image)."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:1 ... (default: CUDA if any)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Images per batch."),
    num_workers: Optional[int] = typer.Option(None, "--num-workers", min=0, help="Decoding worker processes."),
    n_boot: int = typer.Option(1000, "--n-boot", min=1, help="Bootstrap resamples (prompts) for the CIs."),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap."),
) -> None:
    """Score every requested scorer once on every given test set and write the accuracy table (with 95% CIs,
    the published number and the difference) to OUT/bench.csv and OUT/bench.html."""
    from imgpref.eval.bench import BenchDataset, run_bench

    pick_opts = {"images": pickapic_images} if pickapic_images else {}
    given = [("hpdv2_test", hpdv2, {"images": hpdv2_images} if hpdv2_images else {}, None),
             ("imagereward_test", imagereward, {"images": imagereward_images} if imagereward_images else {}, None),
             ("pickapic_test", pickapic, pick_opts, pickapic_val),
             ("pickapic_test_unique", pickapic_unique, pick_opts, pickapic_val),
             ("hpdv3_test", hpdv3, {}, None)]
    try:
        datasets = [BenchDataset(k, src, opts, val) for k, src, opts, val in given if src is not None]
        table = run_bench(scorer, datasets, out, weights=_weights(weights) or None, n_resamples=n_boot, seed=seed,
                          cache=cache, progress=True, device=device, batch_size=batch_size,
                          num_workers=num_workers)
    except (ValueError, FileNotFoundError) as exc:
        usage_error(exc)
    shown = table[["scorer", "dataset", "accuracy", "ci_low", "ci_high", "published", "difference", "n_pairs"]]
    typer.echo(shown.to_string(index=False, float_format=lambda v: f"{v:.1f}"))
    typer.echo(f"wrote {out / 'bench.csv'} and {out / 'bench.html'}")


def register(app: typer.Typer) -> None:
    """Add `imgpref bench` to the root app."""
    app.command("bench")(bench_command)
