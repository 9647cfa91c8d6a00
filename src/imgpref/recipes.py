"""The one recipe checker of `imgpref train` and `imgpref align`: every key of every section, before anything runs.

A recipe is checked against what the code that reads it accepts. The accepted keys live next to that code
(`imgpref.train.run.RECIPE_KEYS`, `imgpref.train.build.SCORER_KEYS` / `BACKBONE_KEYS`,
`imgpref.train.modes.MODE_OPTIONS`, `imgpref.train.module.OPTIMIZER_KEYS` / `loss_options`, the
`imgpref.align.train` sections) or are read from the signatures of the classes a section configures
(`PreferenceDataModule`, `lightning.Trainer`, `EarlyStopping`, each registered head, `DiffusionPreferenceModule`,
`PreferencePairDataModule`), so a new constructor argument is accepted without a second list to update.

An unknown key is a ValueError of one line naming its full dotted path, with the closest valid key:

    scorer.backbone.pretrainde: unknown key (did you mean 'pretrained'?)

Several problems of one recipe are joined on that line with "; ".
"""
from __future__ import annotations

import copy
import difflib
import inspect
from typing import Any, Callable, Iterable, Mapping


# ------------------------------------------------------------------------------------------------ machinery
def signature_keys(obj: Callable[..., Any], exclude: Iterable[str] = ()) -> list[str]:
    """Named parameters of `obj` (a class: its __init__), minus `self`, *args/**kwargs and `exclude`."""
    target = obj.__init__ if inspect.isclass(obj) else obj
    skip = set(exclude) | {"self"}
    return [n for n, p in inspect.signature(target).parameters.items()
            if n not in skip and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]


def takes_any_keyword(obj: Callable[..., Any]) -> bool:
    """True when `obj` (a class: its __init__) has **kwargs, so its accepted keys cannot be listed."""
    target = obj.__init__ if inspect.isclass(obj) else obj
    return any(p.kind == p.VAR_KEYWORD for p in inspect.signature(target).parameters.values())


def _join(section: str, key: Any) -> str:
    return f"{section}.{key}" if section else str(key)


def unknown_key(path: str, key: Any, valid: Iterable[str], kind: str = "") -> str:
    """The one-line message for an unknown `key` at dotted `path`, with the closest valid key if any.

    kind: what the valid keys depend on, e.g. "for head type 'mlp'"."""
    valid = sorted(str(v) for v in valid)
    close = difflib.get_close_matches(str(key), valid, n=1)
    what = f"unknown key {kind}" if kind else "unknown key"
    if close:
        return f"{path}: {what} (did you mean {close[0]!r}?)"
    return f"{path}: {what}; valid keys: {', '.join(valid) if valid else '(none)'}"


def unknown_value(path: str, value: Any, choices: Iterable[str]) -> str:
    """The one-line message for a value of `path` that is not one of `choices`."""
    choices = [str(c) for c in choices]
    close = difflib.get_close_matches(str(value), choices, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{path}: unknown value {value!r}{hint}; use one of {', '.join(choices)}"


class _Problems:
    """Collects every problem of a recipe, raised as one ValueError of one line."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def keys(self, section: str, mapping: Mapping[str, Any], valid: Iterable[str], kind: str = "") -> None:
        valid = list(valid)
        for key in mapping:
            if key not in valid:
                self.items.append(unknown_key(_join(section, key), key, valid, kind))

    def choice(self, path: str, value: Any, choices: Iterable[str]) -> None:
        choices = list(choices)
        if value not in choices:
            self.items.append(unknown_value(path, value, choices))

    def mapping(self, section: str, value: Any, *, none_ok: bool = True) -> dict[str, Any]:
        """`value` as a dict ({} for None when allowed); a problem and {} when it is not a mapping."""
        if value is None and none_ok:
            return {}
        if not isinstance(value, dict):
            self.items.append(f"{section}: must be a mapping (key: value lines), got {type(value).__name__} "
                              f"{value!r}")
            return {}
        return value

    def raise_if_any(self) -> None:
        if self.items:
            raise ValueError("; ".join(self.items))


# ------------------------------------------------------------------------------------------------ training
def check_train_recipe(cfg: Mapping[str, Any]) -> None:
    """Check every key of a training recipe (after `--set` overrides) against what `imgpref.train` reads.

    Raises one ValueError naming each unknown key by its dotted path (with a did-you-mean), each section that
    is not a mapping and each unknown choice (mode, loss, backbone and head type, batching, schedule)."""
    from imgpref.train.run import RECIPE_KEYS

    p = _Problems()
    if not isinstance(cfg, Mapping):
        raise ValueError(f"a training recipe must be a mapping; got {type(cfg).__name__}")
    p.keys("", cfg, RECIPE_KEYS)
    _check_scorer(p, p.mapping("scorer", cfg.get("scorer")))
    _check_mode(p, cfg.get("mode"))
    _check_loss(p, cfg.get("loss"))
    _check_optimizer(p, p.mapping("optimizer", cfg.get("optimizer")))
    _check_augment(p, p.mapping("augment", cfg.get("augment")))
    _check_data(p, p.mapping("data", cfg.get("data")))
    _check_trainer(p, p.mapping("trainer", cfg.get("trainer")))
    _check_head_and_loss(p, cfg)
    p.raise_if_any()


def _check_head_and_loss(p: _Problems, cfg: Mapping[str, Any]) -> None:
    """A loss that cannot train the head is an error; GPM settings that were seen to learn no cycle warn."""
    import warnings

    from imgpref.train.module import check_loss_for_head

    scorer, loss = cfg.get("scorer"), cfg.get("loss")
    head = scorer.get("head") if isinstance(scorer, Mapping) else None
    if not isinstance(head, Mapping):
        return
    kind = head.get("type", "linear")
    name = loss.get("name", "bt_soft") if isinstance(loss, Mapping) else "bt_soft"
    try:
        check_loss_for_head(name, str(kind))
    except ValueError as exc:
        p.items.append(f"loss.name: {exc}")
    if kind == "gpm" and (int(head.get("k", 2)) < 2 or bool(head.get("normalize", False))):
        warnings.warn("scorer.head: a GPM head with k: 1 or normalize: true was seen to learn no cycle "
                      "(use k: 2, normalize: false, the defaults)", UserWarning, stacklevel=3)


def _check_scorer(p: _Problems, scorer: dict[str, Any]) -> None:
    from imgpref.train.build import BACKBONE_KEYS, FROM_IGNORES, SCORER_KEYS

    p.keys("scorer", scorer, SCORER_KEYS)
    if scorer.get("from"):
        for key in FROM_IGNORES:
            if key in scorer:
                p.items.append(f"scorer.{key}: not used with scorer.from (the scorer {scorer['from']!r} brings "
                               "its own); remove it")
    elif "backbone" in scorer:
        bb = p.mapping("scorer.backbone", scorer["backbone"], none_ok=False)
        kind = bb.get("type", "open_clip")
        if kind in BACKBONE_KEYS:
            p.keys("scorer.backbone", bb, BACKBONE_KEYS[kind], f"for backbone type {kind!r}")
            if kind == "open_clip" and "resize_mode" in bb:
                from imgpref.scorers.backbones.resize import RESIZE_MODES

                p.choice("scorer.backbone.resize_mode", bb["resize_mode"], RESIZE_MODES)
        else:
            p.choice("scorer.backbone.type", kind, BACKBONE_KEYS)
    if scorer.get("head") is not None:
        _check_head(p, p.mapping("scorer.head", scorer["head"]))


def _check_head(p: _Problems, head: dict[str, Any]) -> None:
    from imgpref.scorers.heads import head_class, registered_heads

    kind = head.get("type", "linear")
    cls = head_class(kind) if isinstance(kind, str) else None
    if cls is None:
        p.choice("scorer.head.type", kind, registered_heads())
        return
    if not takes_any_keyword(cls):
        p.keys("scorer.head", head, ["type", *signature_keys(cls)], f"for head type {kind!r}")


def _check_mode(p: _Problems, mode: Any) -> None:
    from imgpref.train.modes import MODE_OPTIONS

    if mode is None:
        return
    if isinstance(mode, str):
        p.choice("mode", mode, MODE_OPTIONS)
        return
    mode = p.mapping("mode", mode)
    name = mode.get("name", "full")
    if name not in MODE_OPTIONS:
        p.choice("mode.name", name, MODE_OPTIONS)
        return
    p.keys("mode", mode, ["name", *MODE_OPTIONS[name]], f"for mode {name!r}")


def _check_loss(p: _Problems, loss: Any) -> None:
    from imgpref.train.module import ALL_LOSSES, loss_options

    loss = p.mapping("loss", loss)
    name = loss.get("name", "bt_soft")
    if name not in ALL_LOSSES:
        p.choice("loss.name", name, ALL_LOSSES)
        if name == "gpm":  # GPM is a head trained with any pair loss, not a loss of its own
            p.items[-1] += " (GPM is a head: set scorer.head: {type: gpm} and keep a pair loss such as bt_soft)"
        return
    p.keys("loss", loss, ["name", *loss_options(name)], f"for loss {name!r}")


def _check_optimizer(p: _Problems, opt: dict[str, Any]) -> None:
    from imgpref.train.module import OPTIMIZER_KEYS, SCHEDULES

    p.keys("optimizer", opt, OPTIMIZER_KEYS)
    if "schedule" in opt:
        p.choice("optimizer.schedule", opt["schedule"], SCHEDULES)


def _check_augment(p: _Problems, aug: dict[str, Any]) -> None:
    from imgpref.train.module import AUGMENT_KEYS

    p.keys("augment", aug, AUGMENT_KEYS)


def _check_data(p: _Problems, data: dict[str, Any]) -> None:
    from imgpref.data.datamodule import BATCHINGS, PreferenceDataModule
    from imgpref.train.run import DATA_RESERVED

    p.keys("data", data, signature_keys(PreferenceDataModule, exclude=DATA_RESERVED))
    if "batching" in data:
        p.choice("data.batching", data["batching"], BATCHINGS)


def _check_trainer(p: _Problems, trainer: dict[str, Any]) -> None:
    import lightning as L
    from lightning.pytorch.callbacks import EarlyStopping

    from imgpref.train.run import TRAINER_EXTRA, TRAINER_RESERVED, ema_options

    p.keys("trainer", trainer, [*signature_keys(L.Trainer, exclude=TRAINER_RESERVED), *TRAINER_EXTRA])
    es = trainer.get("early_stopping")
    if es is not None and es is not False:
        p.keys("trainer.early_stopping", p.mapping("trainer.early_stopping", es), signature_keys(EarlyStopping))
    if trainer.get("ema"):
        try:
            ema_options(trainer["ema"])
        except ValueError as exc:
            p.items.append(str(exc))


# ------------------------------------------------------------------------------------------------ alignment
def check_align_recipe(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Fill the align defaults and check every key against the classes it configures; returns the full recipe.

    Constructs nothing heavy: the model arguments are checked for names and choices only."""
    import lightning as L

    from imgpref.align.flow import LOSS_WEIGHTING, SIGMA_SAMPLING
    from imgpref.align.module import FINETUNES, METHODS, REFERENCES, DiffusionPreferenceModule
    from imgpref.align.pairs_data import TIES, PreferencePairDataModule
    from imgpref.align.train import DEFAULTS, EXPORT_KEYS, RESERVED_TRAINER, TOP_KEYS

    p = _Problems()
    p.keys("", cfg, TOP_KEYS)
    p.raise_if_any()
    full = {k: copy.deepcopy(v) for k, v in DEFAULTS.items()}
    for k, v in cfg.items():
        if k in ("model", "data", "trainer", "export"):
            full[k] = {**full[k], **p.mapping(k, v)}
        else:
            full[k] = v
    p.raise_if_any()
    p.keys("model", full["model"], signature_keys(DiffusionPreferenceModule, exclude=("pipeline", "seed", "pipe")))
    p.keys("data", full["data"], signature_keys(PreferencePairDataModule, exclude=("seed",)))
    p.keys("trainer", full["trainer"], signature_keys(L.Trainer, exclude=RESERVED_TRAINER))
    p.keys("export", full["export"], EXPORT_KEYS)
    m = full["model"]
    for name, choices in (("method", METHODS), ("finetune", FINETUNES), ("reference", REFERENCES),
                          ("sigma_sampling", SIGMA_SAMPLING), ("loss_weighting", LOSS_WEIGHTING)):
        if name in m:
            p.choice(f"model.{name}", m[name], choices)
    p.choice("data.ties", full["data"].get("ties", "drop"), TIES)
    if not isinstance(full["pipeline"], str) or not full["pipeline"]:
        p.items.append(f"pipeline: must be a non-empty string ('tiny', a folder or a hub id); got {full['pipeline']!r}")
    try:
        if int(full["checkpoint_every_n_steps"]) < 1:
            raise ValueError
    except (TypeError, ValueError):
        p.items.append(f"checkpoint_every_n_steps: must be an integer >= 1; got {full['checkpoint_every_n_steps']!r}")
    p.raise_if_any()
    return full
