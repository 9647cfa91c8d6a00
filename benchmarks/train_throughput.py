"""Head-only training throughput: cached embeddings vs recomputing embeddings every step (one run, one table).

Same backbone (open_clip ViT-B-32, random weights, 224 px), same head (MLP 512-256-1 on the L2-normalised
embedding), same loss (BT on vote fractions), same optimizer (AdamW), same batch size, same training pairs of
a synthetic rendering-preference set (`imgpref.data.synth`, images stored as PNG at --size px):

- recompute: `PreferenceDataModule(preload=False)` batches, i.e. per step: decode + preprocess every distinct
  image of the batch (DataLoader workers), frozen backbone forward (no grad) of those images, head forward,
  backward, optimizer step. Each distinct image of a batch is embedded once however many of its pairs it holds
  (the data module's behaviour); the table reports images embedded per pair.
- cached: embeddings computed once (`EmbeddingTable.build`, timed separately as "cache build"), then per step:
  index gather of the batch's embeddings + the same head step. Two servings of the same table: `CachedPairs`
  (train.embed_cache) and the data module with `set_features` (what head mode in `imgpref train` uses).

Steady state only: the first step of each path (worker start-up, allocator warm-up) is excluded. The cache build
is reported on its own and amortised: the per-pair rate of E epochs including the one-off build.
Target: cached >= 20x faster per pair than recompute.

    python benchmarks/train_throughput.py [--scenes 8] [--size 224] [--batch-size 16] [--steps 3] [--workers auto]
                                          [--threads N] [--device cpu|cuda]
"""
from __future__ import annotations

import argparse
import copy
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
SECTION = "train_throughput"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def write_results(body_table: str, command: str) -> None:
    """Replace (or append) the "## train_throughput" section of RESULTS.md; other sections are untouched."""
    body = f"## {SECTION}\n\nCommand: `{command}`\n\n{body_table}\n"
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    pattern = re.compile(rf"^## {SECTION}\n.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(lambda _: body + "\n", text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + body
    RESULTS.write_text(text.rstrip("\n") + "\n")


def head_step(head, opt, emb, batch) -> None:
    """One optimisation step of the head on item embeddings `emb` [N, D] of a data-module-style batch."""
    from imgpref.train.losses import bt_soft, vote_fraction

    s = head(emb)
    loss = bt_soft(s[batch["i0"]], s[batch["i1"]], vote_fraction(batch["votes"]))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def timed_steps(batches, step, n_steps: int | None, min_seconds: float = 0.0) -> tuple[int, int, float]:
    """Run `step(batch)` on an iterator of batches: first step excluded, then `n_steps` steps (or until
    `min_seconds` passed when n_steps is None). Returns (pairs, items, seconds) of the timed steps."""
    it = iter(batches)
    step(next(it))  # warm-up, not timed
    pairs = items = done = 0
    t0 = time.perf_counter()
    for batch in it:
        step(batch)
        pairs += int(batch["votes"].shape[0])
        items += int(batch["emb" if "emb" in batch else "pixels"].shape[0])
        done += 1
        if n_steps is not None and done >= n_steps:
            break
        if n_steps is None and time.perf_counter() - t0 >= min_seconds:
            break
    return pairs, items, time.perf_counter() - t0


def epochs_of(make_loader, n: int):
    """Batches of n consecutive epochs (each a fresh loader, as Lightning does)."""
    for _ in range(n):
        yield from make_loader()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scenes", type=int, default=8, help="synthetic scenes (6 renderings, 15 pairs each)")
    ap.add_argument("--size", type=int, default=224, help="side of the stored synthetic images (px)")
    ap.add_argument("--batch-size", type=int, default=16, help="pairs per step (both paths)")
    ap.add_argument("--steps", type=int, default=3, help="timed recompute steps (after one warm-up step)")
    ap.add_argument("--cached-seconds", type=float, default=3.0, help="minimum timed seconds of each cached path")
    ap.add_argument("--workers", default="auto", help="DataLoader decode workers (auto: min(4, CPUs))")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads for both paths (default: torch's default); on a shared, oversubscribed "
                         "machine 1 avoids OpenMP spinning that slows small (head) ops by 10x or more")
    ap.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    args = ap.parse_args()
    workers = min(4, os.cpu_count() or 1) if args.workers == "auto" else int(args.workers)
    dev = torch.device(args.device)
    if args.threads is not None:
        torch.set_num_threads(int(args.threads))

    import open_clip

    from imgpref.data.datamodule import PreferenceDataModule
    from imgpref.data.manifest import read_manifest
    from imgpref.data.synth import make_rendering_dataset
    from imgpref.scorers.backbones.open_clip_backbone import OpenClipBackbone
    from imgpref.scorers.heads import MLPHead
    from imgpref.train.embed_cache import CachedPairs, EmbeddingTable

    tmp = Path(tempfile.mkdtemp(prefix="imgpref-train-bench-"))
    log(f"synthetic set: {args.scenes} scenes at {args.size} px in {tmp}")
    make_rendering_dataset(tmp, scenes=args.scenes, seed=0, size=args.size)
    manifest = tmp / "manifest.csv"
    train_df = read_manifest(manifest, split="train")
    both = read_manifest(manifest)
    both = both[both["split"].isin(["train", "val"])]  # the data module holds train + val items
    images = list(dict.fromkeys(list(both["image_0"]) + list(both["image_1"])))

    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32", pretrained=None).eval()
    backbone = OpenClipBackbone.from_model(model, "ViT-B-32").to(dev).eval()
    for p in backbone.parameters():
        p.requires_grad_(False)
    torch.manual_seed(1)
    head0 = MLPHead(backbone.embed_dim, hidden=(256,), dropout=0.0).to(dev)

    def fresh_head():
        head = copy.deepcopy(head0)
        return head, torch.optim.AdamW(head.parameters(), lr=1e-3, weight_decay=0.01)

    rows = []

    # -- recompute: decode + preprocess + frozen forward + head step, every step
    dm = PreferenceDataModule(manifest, backbone.preprocess, batch_size=args.batch_size, preload=False,
                              num_workers=workers, seed=0)
    dm.setup("fit")
    head, opt = fresh_head()

    def recompute_step(batch):
        with torch.no_grad():
            emb = backbone.embed_images(batch["pixels"].to(dev)).float()
        batch = {k: (v.to(dev) if torch.is_tensor(v) else v) for k, v in batch.items()}
        head_step(head, opt, emb, batch)

    log(f"recompute path: {args.steps} timed steps of {args.batch_size} pairs ({workers} workers) ...")
    p_r, n_r, t_r = timed_steps(epochs_of(dm.train_dataloader, 100), recompute_step, args.steps)
    rate_r = p_r / t_r
    rows.append(("recompute", "decode + preprocess + frozen ViT-B-32 forward + head step", p_r, n_r / p_r, t_r, rate_r))

    # -- cache build (one-off)
    log(f"cache build: {len(images)} images ...")
    t0 = time.perf_counter()
    table = EmbeddingTable.build(backbone, images, batch_size=64, num_workers=workers, device=dev)
    t_build = time.perf_counter() - t0
    assert table.stats["failed"] == 0, table.errors

    # -- cached via CachedPairs
    pairs = CachedPairs.from_manifest(table, train_df)
    emb_dev = table.emb.to(dev)
    head, opt = fresh_head()

    def cached_step(batch):
        batch = {k: (v.to(dev) if torch.is_tensor(v) else v) for k, v in batch.items()}
        head_step(head, opt, batch["emb"], batch)

    log("cached path (CachedPairs) ...")
    counter = iter(range(10**9))
    p_c, n_c, t_c = timed_steps(
        epochs_of(lambda: pairs.loader(args.batch_size, shuffle=True, seed=next(counter)), 10**6),
        cached_step, None, args.cached_seconds)
    rate_c = p_c / t_c
    rows.append(("cached (CachedPairs)", "gather + head step", p_c, n_c / p_c, t_c, rate_c))

    # -- cached via the data module's feature serving (head mode of `imgpref train`)
    dm2 = PreferenceDataModule(manifest, backbone.preprocess, batch_size=args.batch_size, preload=False, seed=0)
    dm2.setup("fit")
    dm2.set_features(table.gather(dm2.items))
    head, opt = fresh_head()
    log("cached path (PreferenceDataModule.set_features) ...")
    p_d, n_d, t_d = timed_steps(epochs_of(dm2.train_dataloader, 10**6), cached_step, None, args.cached_seconds)
    rate_d = p_d / t_d
    rows.append(("cached (data module features)", "gather + head step", p_d, n_d / p_d, t_d, rate_d))
    del emb_dev

    n_pairs = len(train_df)
    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    lines = [
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads{load}, device {dev}; synth {args.scenes} scenes at {args.size} px, "
        f"{n_pairs} training pairs; {len(images)} train + val images; batch {args.batch_size} pairs; {workers} workers.",
        "",
        "| path | per step | timed pairs | images embedded / pair | seconds | pairs/s | speed-up vs recompute |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, what, p, ipp, t, rate in rows:
        emb_per_pair = f"{ipp:.2f}" if name == "recompute" else "0 (gathered)"
        lines.append(f"| {name} | {what} | {p} | {emb_per_pair} | {t:.2f} | {rate:,.1f} | {rate / rate_r:,.0f}x |")
    lines += [
        "",
        f"Cache build (once): {len(images)} images in {t_build:.2f} s ({len(images) / t_build:.2f} images/s; decode + "
        "preprocess + frozen forward, no disk cache).",
        "",
        "Amortised over E epochs of the training pairs (cache build included, CachedPairs rate):",
        "",
        "| epochs | cached incl. build (pairs/s) | recompute (pairs/s) | speed-up |",
        "|---:|---:|---:|---:|",
    ]
    for e in (1, 10, 100):
        amort = e * n_pairs / (t_build + e * n_pairs / rate_c)
        lines.append(f"| {e} | {amort:,.1f} | {rate_r:,.1f} | {amort / rate_r:,.1f}x |")
    worst = min(rate_c, rate_d) / rate_r
    lines += ["", f"Target cached >= 20x faster per pair (steady state): {worst:,.0f}x -> "
                  f"{'PASS' if worst >= 20 else 'FAIL'}"]
    table_md = "\n".join(lines)
    print(table_md)
    if not args.no_write:
        cmd = "python benchmarks/train_throughput.py " + " ".join(sys.argv[1:])
        write_results(table_md, cmd.strip())
        log(f"wrote section '{SECTION}' of {RESULTS}")


if __name__ == "__main__":
    main()
