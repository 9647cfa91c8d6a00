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
bt_scale is fitted on the logit that selected the checkpoint (per-annotator for pluralistic heads, which also
get `bt_scale_population` for their population mixture), and train_summary.json reports that logit's val
metrics (`selected_by` names it; `val_acc_per_annotator` and `*_population` for pluralistic heads).

Every key of every section is checked by `imgpref.recipes.check_train_recipe` before anything is built or
written (an unknown key is a one-line ValueError naming its dotted path, with "did you mean"). The scorer files
are published last (into a hidden folder first, scorer.yaml moved in at the very end, after train_summary.json),
so `out` loads as a scorer only after a complete run; a new run removes an earlier run's scorer.yaml first.

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

from imgpref.atomic import atomic_write

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


# What `train` reads; `imgpref.recipes.check_train_recipe` checks a recipe against these (and the key sets next
# to the code of each section) before anything is written.
RECIPE_KEYS = ("torch_threads", "seed", "scorer", "mode", "loss", "optimizer", "augment", "data", "trainer",
               "calibrate", "name", "description")
DATA_RESERVED = ("manifest", "preprocess", "seed")           # PreferenceDataModule arguments train sets itself
TRAINER_RESERVED = ("default_root_dir", "callbacks", "logger", "use_distributed_sampler")
TRAINER_EXTRA = ("early_stopping", "ema")                    # trainer keys that become callbacks


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
def _val_scores(module, dm, population: bool = False) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(pair logit, vote fraction, annotator) of every val pair: the logit validation (and so checkpoint
    selection) used (pair_margin: GPM's full s(a, b), a pluralistic head's per-annotator mixture), or with
    `population=True` a pluralistic head's population mixture (what it predicts for an unknown annotator)."""
    module.eval()
    diffs, qs, names = [], [], []
    loaders = dm.val_dataloader()
    for batch in loaders or []:
        batch = {k: (v.to(module.device) if torch.is_tensor(v) else v) for k, v in batch.items()}
        ann = batch.pop("annotators", None) if population else batch.get("annotators")
        if batch["votes"].shape[0] == 0:  # every pair had an unreadable image (left out by the data module)
            continue
        v = batch["votes"].double()
        diffs.append(module.pair_logits(batch).double().cpu())
        qs.append(((v[:, 0] + 0.5 * v[:, 2]) / v.sum(1)).cpu())
        names += [str(a or "") for a in ann] if ann is not None else [""] * int(v.shape[0])
    if not diffs:
        return torch.zeros(0, dtype=torch.float64), torch.zeros(0, dtype=torch.float64), []
    return torch.cat(diffs), torch.cat(qs), names


def _val_metrics(d: torch.Tensor, q: torch.Tensor, calibrate: bool, suffix: str = "") -> tuple[dict, float]:
    """val_nll / val_acc (majority, 50/50 pairs left out) of logits d against q; bt_scale fitted to d."""
    from imgpref.train.calibrate import bt_nll, fit_bt_scale

    out: dict[str, Any] = {f"val_nll{suffix}": bt_nll(1.0, d.numpy(), q.numpy())}
    dec = ~torch.isclose(q, torch.tensor(0.5, dtype=q.dtype))
    out[f"val_acc{suffix}"] = float(((d > 0) == (q > 0.5))[dec].double().mean()) if dec.any() else float("nan")
    scale = 1.0
    if calibrate:
        scale = fit_bt_scale(d, torch.zeros_like(d), q)
        out[f"val_nll_calibrated{suffix}"] = bt_nll(scale, d.numpy(), q.numpy())
    return out, scale


_EMA_KEYS = {"decay", "update_every_n_steps", "update_starting_at_step", "update_starting_at_epoch", "device"}


def ema_options(ema_cfg: Any) -> dict[str, Any]:
    """The EMAWeightAveraging arguments of `trainer.ema` (`true` = defaults); ValueError naming a bad key/value."""
    from imgpref.recipes import unknown_key

    opts = {} if ema_cfg is True else ema_cfg
    if not isinstance(opts, dict):
        raise ValueError(f"trainer.ema: must be true or a mapping like {{decay: 0.99}}, got {ema_cfg!r}")
    for key in opts:
        if key not in _EMA_KEYS:
            raise ValueError(unknown_key(f"trainer.ema.{key}", key, _EMA_KEYS))
    try:
        decay = float(opts.get("decay", 0.999))
    except (TypeError, ValueError):
        decay = float("nan")
    if not 0.0 < decay < 1.0:
        raise ValueError(f"trainer.ema.decay: must be a number in (0, 1), got {opts.get('decay')!r}")
    return {**opts, "decay": decay}


def _ema_callback(ema_cfg: Any):
    """Lightning's EMAWeightAveraging from `trainer.ema` ({decay, update_every_n_steps, update_starting_at_step,
    update_starting_at_epoch, device}; `true` = defaults). Validation, the best/last checkpoints' state_dict and
    the final weights are the averaged ones; resume restores both the current and the averaged weights."""
    from lightning.pytorch.callbacks import EMAWeightAveraging

    return EMAWeightAveraging(**ema_options(ema_cfg))


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
    from imgpref.recipes import check_train_recipe
    from imgpref.train.build import build_scorer
    from imgpref.scorers.pref_heads import GPMHead, PluralisticHead
    from imgpref.train.embed_cache import attach_features
    from imgpref.train.modes import merge_lora
    from imgpref.train.module import RewardModelModule

    t0 = time.time()
    cfg = apply_overrides(load_recipe(config), overrides)
    check_train_recipe(cfg)  # every key of every section, before anything is built or written
    data = Path(data)
    if not data.is_file():
        raise FileNotFoundError(f"manifest {data} not found (create one with `imgpref data synth` or `data convert`)")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a folder for the trained scorer and its checkpoints")
    ckpt_dir = out / "checkpoints"
    last = ckpt_dir / "last.ckpt"
    if resume and not last.is_file():
        raise FileNotFoundError(f"--resume: no checkpoint {last}; run without --resume to start training")

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
                                texts=bool(scorer.head.needs_text), prompt_texts=scorer.prompt_texts)
        log.info("embedding cache: %s", table.stats)
    has_val = len(dm.tables.get(dm.val_split, ())) > 0

    # the run folder is made only now, so a bad recipe, manifest or scorer leaves nothing behind
    _start_run_folder(out, cfg)

    tcfg = dict(cfg.get("trainer") or {})
    es_cfg = tcfg.pop("early_stopping", {"patience": 10})
    ema_cfg = tcfg.pop("ema", None)
    accelerator = str(tcfg.pop("accelerator", "auto"))
    precision = _precision(tcfg.pop("precision", "auto"), accelerator)
    if accelerator == "auto" and not torch.cuda.is_available():
        accelerator = "cpu"
    limit_val = tcfg.pop("limit_val_batches", None)
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
        limit_val_batches=limit_val if has_val else 0,
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
    notes: dict[str, Any] = {}  # non-numeric summary entries (TrainResult.metrics stays numbers only)
    scale = 1.0
    extra: dict[str, Any] = {}
    if has_val:
        # the metrics of the logit that selected the checkpoint (validation_step's), and bt_scale fitted to it
        plural = isinstance(scorer.head, PluralisticHead)
        d, q, names = _val_scores(module, dm)
        notes["selected_by"] = f"{MONITOR} of the " + ("per-annotator mixture" if plural else
                                                          "pairwise s(a, b)" if isinstance(scorer.head, GPMHead)
                                                          else "score difference") + " logit"
        part, scale = _val_metrics(d, q, bool(cfg.get("calibrate", True)))
        metrics.update(part)
        if plural:  # per annotator, and the population mixture (with its own bt_scale) next to it
            notes["val_acc_per_annotator"] = {
                a: _val_metrics(d[idx], q[idx], False)[0]["val_acc"]
                for a in sorted(set(names) - {""}) for idx in [torch.tensor([n == a for n in names])]}
            part, pop_scale = _val_metrics(*_val_scores(module, dm, population=True)[:2],
                                           bool(cfg.get("calibrate", True)), "_population")
            metrics.update(part)
            extra["bt_scale_population"] = float(pop_scale)
            metrics["bt_scale_population"] = float(pop_scale)
    scorer.info.extra = {**dict(scorer.info.extra or {}), "bt_scale": float(scale), **extra}
    scorer.eval()
    include = None if module.mode["name"] == "head" else True
    seconds = time.time() - t0
    result = TrainResult(out=out, scorer_dir=out, scorer=scorer, best_checkpoint=best if best else None,
                         last_checkpoint=last if last.is_file() else None, bt_scale=float(scale),
                         epochs=int(trainer.current_epoch), steps=int(trainer.global_step), seconds=seconds,
                         metrics=metrics)
    summary = {"epochs": result.epochs, "steps": result.steps, "seconds": round(seconds, 2), "bt_scale": scale,
               "best_checkpoint": str(best) if best else None, "precision": precision, **metrics, **notes}
    with atomic_write(out / "train_summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2))
    _publish_scorer(scorer, out, include)  # last: the folder loads as a scorer only when the run is complete
    return result


def _start_run_folder(out: Path, cfg: dict[str, Any]) -> None:
    """Create the run folder and record the recipe; an earlier run's scorer.yaml is removed, so the folder is not
    a loadable scorer again until this run has written its own (a failed run leaves no stale or half scorer)."""
    from imgpref.scorers.folder import CONFIG_NAME

    out.mkdir(parents=True, exist_ok=True)
    old = out / CONFIG_NAME
    if old.is_file():
        old.unlink()
        log.warning("removed %s of an earlier run; %s becomes a scorer folder again when this run finishes", old, out)
    with atomic_write(out / "recipe.yaml") as tmp:
        tmp.write_text(yaml.safe_dump(cfg, sort_keys=False))


def _publish_scorer(scorer, out: Path, include_backbone: bool | None) -> None:
    """Write the scorer folder files into `out` so that it loads only once complete: everything is saved into a
    hidden temporary folder beside them first, then moved in, scorer.yaml (what makes a folder a scorer) last."""
    import os
    import shutil

    from imgpref.scorers.folder import CONFIG_NAME, save_scorer

    tmp = out / f".scorer-{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        save_scorer(scorer, tmp, include_backbone=include_backbone)
        for entry in sorted(tmp.iterdir(), key=lambda p: p.name == CONFIG_NAME):
            dest = out / entry.name
            if entry.is_dir() and dest.is_dir():
                shutil.rmtree(dest)
            os.replace(entry, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
