"""`imgpref align` training: a YAML recipe + a manifest -> a Lightning run -> an exported, diffusers-loadable UNet.

Recipe layout (every key optional except what is needed to find the data; unknown keys are errors):

    pipeline: tiny            # "tiny" / "tiny-sdxl" / "tiny-sd3" / "tiny-flux", a pipeline folder, or a hub id
                              # (SD1.5, SDXL, SD3/SD3.5, FLUX; read offline from the HF cache)
    seed: 0
    model: {...}              # DiffusionPreferenceModule arguments (method, beta, finetune, reference, lr, ...)
    data: {...}               # PreferencePairDataModule arguments (manifest, resolution, batch_size, ties, ...)
    trainer: {...}            # lightning.Trainer arguments (max_steps, precision, accumulate_grad_batches, ...)
    checkpoint_every_n_steps: 50
    export: {use_ema: true}

Overrides use dotted keys: `align(cfg, data, out, **{"model.beta": 1000})` or `--set model.beta=1000`.
"""
from __future__ import annotations

import copy
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from imgpref.atomic import atomic_write

log = logging.getLogger(__name__)

TOP_KEYS = ("pipeline", "seed", "model", "data", "trainer", "checkpoint_every_n_steps", "export", "resume")
DEFAULTS: dict[str, Any] = {
    "pipeline": "tiny",
    "seed": 0,
    "model": {},
    "data": {},
    "trainer": {},
    "checkpoint_every_n_steps": 50,
    "export": {"use_ema": True},
    "resume": False,  # a run never continues an earlier one unasked (`imgpref align --resume`)
}
# Arguments that the trainer sets itself and a recipe must not.
RESERVED_TRAINER = ("default_root_dir", "logger", "callbacks")
EXPORT_KEYS = ("use_ema",)


@dataclass
class AlignResult:
    """What `align` did: where things are, how much data it saw, final metrics."""

    out_dir: Path
    export_dir: Path
    checkpoint: Path | None
    steps: int
    data: dict[str, int]
    metrics: dict[str, float] = field(default_factory=dict)
    resumed_from: str | None = None


def load_config(config: dict | str | os.PathLike | None) -> dict[str, Any]:
    """A recipe as a dict (from a dict, a YAML file, or None for the defaults), not yet validated."""
    if config is None:
        return {}
    if isinstance(config, dict):
        return copy.deepcopy(config)
    p = Path(config)
    if not p.is_file():
        raise FileNotFoundError(f"align config not found: {p} (see configs/align/ for recipes)")
    cfg = yaml.safe_load(p.read_text())
    if cfg is None:
        return {}
    if not isinstance(cfg, dict):
        raise ValueError(f"{p}: an align config must be a YAML mapping; got {type(cfg).__name__}")
    return cfg


def apply_overrides(cfg: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Set dotted keys ("model.beta") or merge nested dicts ({"model": {...}}) into a copy of `cfg`."""
    out = copy.deepcopy(cfg)
    for key, value in overrides.items():
        parts = key.split(".")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {key!r}: {part!r} is not a section")
        if isinstance(value, dict) and isinstance(node.get(parts[-1]), dict):
            node[parts[-1]] = {**node[parts[-1]], **value}
        else:
            node[parts[-1]] = value
    return out


def parse_set(items: list[str] | None) -> dict[str, Any]:
    """`["model.beta=1000", "trainer.max_steps=5"]` -> {"model.beta": 1000, ...} (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--set expects KEY=VALUE (e.g. model.beta=1000); got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = yaml.safe_load(v)
    return out


def validate_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """Fill defaults and check every key against the classes it configures; returns the full recipe.

    The checker is `imgpref.recipes.check_align_recipe`, the one module that checks train and align recipes."""
    from imgpref.recipes import check_align_recipe

    return check_align_recipe(cfg)


def align(
    config: dict | str | os.PathLike | None,
    data: str | os.PathLike | None = None,
    out: str | os.PathLike = "align_run",
    *,
    pipe: Any = None,
    **overrides: Any,
) -> AlignResult:
    """Train with a recipe on a manifest and export the result (see the module docstring).

    data: the manifest (overrides `data.manifest` of the recipe). out: the run folder; it gets `checkpoints/`
    (`last.ckpt`; a later call with the same `out` and `resume=True` continues from it), `logs/` (CSV metrics),
    `aligned/` (the export, see `imgpref.align.export`) and `align_result.yaml`.
    pipe: an already loaded base pipeline (otherwise `pipeline` of the recipe is loaded).
    """
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    from imgpref.align.export import export_aligned
    from imgpref.align.module import DiffusionPreferenceModule
    from imgpref.align.pairs_data import PreferencePairDataModule

    cfg = validate_config(apply_overrides(load_config(config), overrides))
    manifest = data if data is not None else cfg["data"].get("manifest")
    if manifest is None:
        raise ValueError("no preference data: pass data=MANIFEST (CLI: --data) or set data.manifest in the config")
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_write(out_dir / "config.yaml") as tmp:
        tmp.write_text(yaml.safe_dump({**cfg, "data": {**cfg["data"], "manifest": str(manifest)}}, sort_keys=False))
    L.seed_everything(int(cfg["seed"]), workers=True, verbose=False)

    dm_args = {k: v for k, v in cfg["data"].items() if k != "manifest"}
    dm = PreferencePairDataModule(manifest, seed=int(cfg["seed"]), **dm_args)
    summary = dm.summary()
    log.info("align data: %s", summary)
    if summary["ties_dropped"]:
        log.warning("%d tied pairs dropped (data.ties='keep' keeps them as two half-weight orientations)",
                    summary["ties_dropped"])

    model = DiffusionPreferenceModule(pipeline=cfg["pipeline"], seed=int(cfg["seed"]), pipe=pipe, **cfg["model"])
    ckpt_dir = out_dir / "checkpoints"
    ckpt_cb = ModelCheckpoint(dirpath=ckpt_dir, filename="step{step}", save_last=True, save_top_k=1,
                              every_n_train_steps=int(cfg["checkpoint_every_n_steps"]), auto_insert_metric_name=False)
    logger = CSVLogger(str(out_dir), name="logs", version="")
    logger.log_hyperparams({f"data/{k}": v for k, v in summary.items()})
    trainer_args = {"max_steps": 20, "enable_model_summary": False, "log_every_n_steps": 1, **cfg["trainer"]}
    if not cfg["data"].get("val_split"):
        trainer_args.setdefault("limit_val_batches", 0)
    trainer = L.Trainer(default_root_dir=str(out_dir), logger=logger, callbacks=[ckpt_cb], **trainer_args)
    last = ckpt_dir / "last.ckpt"
    resume = str(last) if cfg["resume"] and last.is_file() else None
    if resume:
        log.info("resuming from %s", resume)
    # Checkpoints hold tensors and plain hyper-parameters only, so the safe (weights_only) loader reads them.
    with warnings.catch_warnings():
        # VAE and text encoders are frozen in eval mode on purpose; Lightning warns about any eval-mode module.
        warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode.*")
        trainer.fit(model, datamodule=dm, ckpt_path=resume, weights_only=True)

    export_dir = export_aligned(model, out_dir / "aligned", use_ema=bool(cfg["export"].get("use_ema", True)),
                                extra={"data": summary, "steps": int(trainer.global_step)})
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if getattr(v, "numel", lambda: 1)() == 1}
    result = AlignResult(out_dir=out_dir, export_dir=export_dir, checkpoint=last if last.is_file() else None,
                         steps=int(trainer.global_step), data=summary, metrics=metrics, resumed_from=resume)
    with atomic_write(out_dir / "align_result.yaml") as tmp:
        tmp.write_text(yaml.safe_dump({
            "steps": result.steps, "data": summary, "metrics": metrics, "export_dir": str(export_dir),
            "checkpoint": str(result.checkpoint) if result.checkpoint else None, "resumed_from": resume,
            "prompt_dropout": float(model.hparams.prompt_dropout),
        }, sort_keys=False))
    return result

