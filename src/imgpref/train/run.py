"""`train(config, data, out)`: a YAML recipe + a canonical manifest -> a trained scorer folder.

Output layout (`out/` itself is the scorer folder, so `imgpref score/eval --scorer OUT` and `load_scorer(OUT)`
use it directly):

    out/scorer.yaml, out/model.safetensors   the trained scorer (best val checkpoint, calibrated bt_scale)
    out/checkpoints/last.ckpt, best.ckpt      Lightning checkpoints (resume with resume=True / --resume)
    out/logs/                                 CSV logs (train/loss, val/nll, val/acc per epoch)
    out/recipe.yaml                           the recipe after overrides, as run
    out/train_summary.json                    epochs, steps, seconds, best val metrics, bt_scale

Recipe sections (see configs/train/*.yaml): seed, scorer (imgpref.train.build), mode (imgpref.train.modes;
mode head also takes cache_embeddings (default true: embed every distinct image once with the frozen backbone,
`imgpref.train.embed_cache.attach_features`) and cache_dir (an on-disk embedding cache keyed by file content hash,
backbone and weights fingerprint, shared with `imgpref score --cache`; null = in memory only)),
loss {name, ...kwargs}, optimizer (RewardModelModule), augment, data (PreferenceDataModule), trainer
(max_epochs, max_steps, max_time, precision, accelerator, devices, strategy, num_nodes,
accumulate_grad_batches, gradient_clip_val, early_stopping {monitor, patience, mode}, ema {decay, ...}: an
exponential moving average of the weights, used for validation, checkpoints and the saved scorer, ...), calibrate (bool),
torch_threads (intra-op CPU threads; unset = torch's default).

Heads: every pair loss trains the head's pair logit (`imgpref.scorers.pref_heads.pair_margin`), so
`head: {type: gpm, k: ...}` trains the full intransitive GPM, and `head: {type: pluralistic}` learns one mixture
per annotator of the manifest's `annotator` column (added to the head from the train split). The post-hoc
bt_scale is fitted on the same pair logit (population mixture for pluralistic heads).

Resume is exact (same weights and metrics as an uninterrupted run) from the epoch-end checkpoints that
ModelCheckpoint writes after each validation; a run killed mid-epoch restarts that epoch from its beginning.
With no val rows in the manifest, PreferenceDataModule holds out 15% of the train groups for validation.
"""
from __future__ import annotations

import copy
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
import yaml

log = logging.getLogger(__name__)

MONITOR = "val/nll"


@dataclass
class TrainResult:
    """What `train` produced."""

    out: Path
    scorer_dir: Path
    scorer: Any                      # the trained imgpref Scorer (best weights, calibrated)
    best_checkpoint: Path | None
    last_checkpoint: Path | None
    bt_scale: float
    epochs: int
    steps: int
    seconds: float
    metrics: dict[str, float] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------- recipe
def load_recipe(config: dict | str | Path) -> dict[str, Any]:
    """A recipe dict from a dict or a YAML file (FileNotFoundError / ValueError naming the file)."""
    if isinstance(config, dict):
        return copy.deepcopy(config)
    path = Path(config)
    if not path.is_file():
        raise FileNotFoundError(f"training recipe {path} not found (see configs/train/ for examples)")
    doc = yaml.safe_load(path.read_text())
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: a training recipe must be a YAML mapping")
    return doc


def apply_overrides(cfg: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply `a.b.c=value` overrides (value parsed as YAML: 3, 1e-4, true, null, [1, 2], {k: v})."""
    cfg = copy.deepcopy(cfg)
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like key.sub=value (e.g. trainer.max_epochs=5)")
        key, raw = item.split("=", 1)
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise ValueError(f"override {item!r} has an empty key")
        node = cfg
        for p in parts[:-1]:
            if not isinstance(node.get(p, {}), dict):
                raise ValueError(f"override {item!r}: {p!r} is not a section of the recipe")
            node = node.setdefault(p, {})
        node[parts[-1]] = _parse_value(raw)
    return cfg


def _parse_value(raw: str) -> Any:
    value = yaml.safe_load(raw) if raw.strip() else ""
    if isinstance(value, str):  # YAML 1.1 reads "2e-4" as a string; a number is what anyone means
        try:
            return float(value)
        except ValueError:
            return value
    return value


_KNOWN = {"torch_threads", "seed", "scorer", "mode", "loss", "optimizer", "augment", "data", "trainer", "calibrate",
          "name", "description"}


def _check(cfg: dict[str, Any]) -> None:
    unknown = sorted(set(cfg) - _KNOWN)
    if unknown:
        raise ValueError(f"unknown recipe section(s) {unknown}; known: {sorted(_KNOWN)}")


def _precision(value: Any, accelerator: str) -> str:
    if value not in (None, "auto"):
        return str(value)
    gpu = torch.cuda.is_available() and accelerator in ("auto", "gpu", "cuda")
    if not gpu:
        return "32-true"
    return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"


# ---------------------------------------------------------------------------------------------- training
def _add_annotators(scorer, dm) -> None:
    """A pluralistic head learns mixture weights per annotator: give it the train split's annotators it lacks
    (sorted, so a resumed run rebuilds the same parameter layout)."""
    from imgpref.scorers.pref_heads import PluralisticHead

    head = scorer.head
    if not isinstance(head, PluralisticHead):
        return
    new = [a for a in dm.annotator_names() if a not in head.annotators]
    if not new and not head.annotators:
        log.warning("pluralistic head: the manifest has no annotator column values; every pair uses the "
                    "population (uniform) mixture")
    for a in new:
        head.add_annotator(a)


def _best_weights(module, path: Path | None) -> bool:
    if path is None or not path.is_file():
        return False
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    module.load_state_dict(ckpt["state_dict"])
    return True


@torch.no_grad()
def _val_scores(module, dm) -> tuple[torch.Tensor, torch.Tensor]:
    module.eval()
    diffs, qs = [], []
    loaders = dm.val_dataloader()
    for batch in loaders or []:
        batch = {k: (v.to(module.device) if torch.is_tensor(v) else v) for k, v in batch.items()}
        # the scorer's own pair probability (pair_margin: GPM's full s(a, b)); a pluralistic head is calibrated
        # on its population mixture, the scores a saved scorer reports
        batch.pop("annotators", None)
        v = batch["votes"].double()
        diffs.append(module.pair_logits(batch).double().cpu())
        qs.append(((v[:, 0] + 0.5 * v[:, 2]) / v.sum(1)).cpu())
    if not diffs:
        return torch.zeros(0, dtype=torch.float64), torch.zeros(0, dtype=torch.float64)
    return torch.cat(diffs), torch.cat(qs)


_EMA_KEYS = {"decay", "update_every_n_steps", "update_starting_at_step", "update_starting_at_epoch", "device"}


def _ema_callback(ema_cfg: Any):
    """Lightning's EMAWeightAveraging from `trainer.ema` ({decay, update_every_n_steps, update_starting_at_step,
    update_starting_at_epoch, device}; `true` = defaults). Validation, the best/last checkpoints' state_dict and
    the final weights are the averaged ones; resume restores both the current and the averaged weights."""
    from lightning.pytorch.callbacks import EMAWeightAveraging

    opts = {} if ema_cfg is True else ema_cfg
    if not isinstance(opts, dict):
        raise ValueError(f"trainer.ema must be true or a mapping like {{decay: 0.99}}, got {ema_cfg!r}")
    unknown = sorted(set(opts) - _EMA_KEYS)
    if unknown:
        raise ValueError(f"trainer.ema: unknown key(s) {unknown}; known: {sorted(_EMA_KEYS)}")
    decay = float(opts.get("decay", 0.999))
    if not 0.0 < decay < 1.0:
        raise ValueError(f"trainer.ema.decay must be in (0, 1), got {decay}")
    return EMAWeightAveraging(**{**opts, "decay": decay})


def train(config: dict | str | Path, data: str | Path, out: str | Path, overrides: Sequence[str] = (),
          resume: bool = False, progress: bool = True) -> TrainResult:
    """Train the scorer of recipe `config` on manifest `data`; write the scorer folder and checkpoints to `out`.

    resume: continue from `out/checkpoints/last.ckpt` (same recipe and data) with restored optimizer,
    scheduler, loop state and data order. Returns a TrainResult.
    """
    import lightning as L
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    from imgpref.data.datamodule import PreferenceDataModule
    from imgpref.scorers.folder import save_scorer
    from imgpref.train.build import build_scorer
    from imgpref.train.calibrate import bt_nll, fit_bt_scale
    from imgpref.train.embed_cache import attach_features
    from imgpref.train.modes import merge_lora
    from imgpref.train.module import RewardModelModule

    t0 = time.time()
    cfg = apply_overrides(load_recipe(config), overrides)
    _check(cfg)
    data = Path(data)
    if not data.is_file():
        raise FileNotFoundError(f"manifest {data} not found (create one with `imgpref data synth` or `data convert`)")
    out = Path(out)
    ckpt_dir = out / "checkpoints"
    last = ckpt_dir / "last.ckpt"
    if resume and not last.is_file():
        raise FileNotFoundError(f"--resume: no checkpoint {last}; run without --resume to start training")
    out.mkdir(parents=True, exist_ok=True)
    (out / "recipe.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))

    if cfg.get("torch_threads"):
        # tiny models: one intra-op thread avoids OpenMP spin-waiting, which wrecks wall time on a busy machine
        torch.set_num_threads(int(cfg["torch_threads"]))
    seed = int(cfg.get("seed", 0))
    L.seed_everything(seed, workers=True, verbose=False)
    scorer = build_scorer(cfg.get("scorer") or {})
    loss_cfg = dict(cfg.get("loss") or {"name": "bt_soft"})
    loss_name = loss_cfg.pop("name", "bt_soft")
    data_cfg = dict(cfg.get("data") or {})
    listwise = loss_name == "plackett_luce"
    if listwise:
        data_cfg.setdefault("batching", "groups")
        data_cfg["listwise"] = True
    dm = PreferenceDataModule(data, scorer.preprocess, seed=seed, **data_cfg)
    dm.setup("fit")
    for err in dm.errors:
        log.warning("unreadable image %s: %s", err["image"], err["error"])
    _add_annotators(scorer, dm)
    mode_cfg = cfg.get("mode") or "full"
    module = RewardModelModule(scorer, loss_name, loss_kwargs=loss_cfg, optimizer=cfg.get("optimizer"),
                               mode=mode_cfg, augment=cfg.get("augment"), seed=seed)
    mode_opts = mode_cfg if isinstance(mode_cfg, dict) else {}
    if module.mode["name"] == "head" and mode_opts.get("cache_embeddings", True) is not False:
        # embed every distinct image once (content-deduplicated; with mode.cache_dir also on disk, keyed by
        # content hash + backbone + weights fingerprint, so a rerun skips the backbone); unreadable images drop
        # their pairs
        cache_dir = mode_opts.get("cache_dir")
        table = attach_features(dm, scorer.backbone, num_workers=dm.num_workers,
                                cache_dir=Path(str(cache_dir)).expanduser() if cache_dir else None,
                                texts=bool(scorer.head.needs_text))
        log.info("embedding cache: %s", table.stats)
    has_val = len(dm.tables.get(dm.val_split, ())) > 0

    tcfg = dict(cfg.get("trainer") or {})
    es_cfg = tcfg.pop("early_stopping", {"patience": 10})
    ema_cfg = tcfg.pop("ema", None)
    accelerator = str(tcfg.pop("accelerator", "auto"))
    precision = _precision(tcfg.pop("precision", "auto"), accelerator)
    if accelerator == "auto" and not torch.cuda.is_available():
        accelerator = "cpu"
    callbacks = [ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor=MONITOR if has_val else None,
                                 mode="min", save_top_k=1, save_last=True, enable_version_counter=False)]
    if has_val and es_cfg:
        es_cfg = dict(es_cfg)
        callbacks.append(EarlyStopping(monitor=es_cfg.pop("monitor", MONITOR), mode=es_cfg.pop("mode", "min"),
                                       patience=int(es_cfg.pop("patience", 10)), **es_cfg))
    if ema_cfg:
        callbacks.append(_ema_callback(ema_cfg))
    trainer = L.Trainer(
        default_root_dir=str(out),
        accelerator=accelerator,
        precision=precision,
        devices=tcfg.pop("devices", "auto" if accelerator != "cpu" else 1),
        strategy=tcfg.pop("strategy", "auto"),
        num_nodes=int(tcfg.pop("num_nodes", 1)),
        deterministic=tcfg.pop("deterministic", True),
        max_epochs=tcfg.pop("max_epochs", 10),
        callbacks=callbacks,
        logger=CSVLogger(str(out), name="logs", version=""),
        enable_progress_bar=bool(tcfg.pop("enable_progress_bar", progress)),
        enable_model_summary=bool(tcfg.pop("enable_model_summary", False)),
        num_sanity_val_steps=int(tcfg.pop("num_sanity_val_steps", 0)),
        use_distributed_sampler=False,  # PreferenceDataModule shards its own batch plan across ranks
        limit_val_batches=None if has_val else 0,
        **tcfg,
    )
    dm.trainer = trainer
    trainer.fit(module, datamodule=dm, ckpt_path=str(last) if resume else None)

    best = Path(callbacks[0].best_model_path) if callbacks[0].best_model_path else None
    if has_val and not _best_weights(module, best):
        log.warning("no best checkpoint found; keeping the final weights")
    module.to("cpu").float()
    scorer = module.scorer
    if module.mode["name"] == "lora":
        merge_lora(scorer)
    metrics: dict[str, float] = {}
    scale = 1.0
    if has_val:
        d, q = _val_scores(module, dm)
        metrics["val_nll"] = bt_nll(1.0, d.numpy(), q.numpy())
        dec = ~torch.isclose(q, torch.tensor(0.5, dtype=q.dtype))
        metrics["val_acc"] = float(((d > 0) == (q > 0.5))[dec].double().mean()) if dec.any() else float("nan")
        if cfg.get("calibrate", True):
            scale = fit_bt_scale(d, torch.zeros_like(d), q)
            metrics["val_nll_calibrated"] = bt_nll(scale, d.numpy(), q.numpy())
    scorer.info.extra = {**dict(scorer.info.extra or {}), "bt_scale": float(scale)}
    scorer.eval()
    include = None if module.mode["name"] == "head" else True
    save_scorer(scorer, out, include_backbone=include)
    seconds = time.time() - t0
    result = TrainResult(out=out, scorer_dir=out, scorer=scorer, best_checkpoint=best if best else None,
                         last_checkpoint=last if last.is_file() else None, bt_scale=float(scale),
                         epochs=int(trainer.current_epoch), steps=int(trainer.global_step), seconds=seconds,
                         metrics=metrics)
    summary = {"epochs": result.epochs, "steps": result.steps, "seconds": round(seconds, 2), "bt_scale": scale,
               "best_checkpoint": str(best) if best else None, "precision": precision, **metrics}
    (out / "train_summary.json").write_text(json.dumps(summary, indent=2))
    return result
