"""Training configuration: YAML defaults overridden by command-line flags, one flag per key."""
from __future__ import annotations

import argparse
import copy
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import yaml

from ..data.transforms import check_aug
from ..utils.yamlfile import read_yaml_mapping
from .loss import ASSIGNERS

__all__ = ["DEFAULT_TRAIN_CONFIG", "STRING_KEYS", "load_train_config", "parse_train_args"]


def _default_train_config() -> Path:
    """configs/train.yaml: the repository's in a checkout (or an editable install), else the copy that setup.py
    packs as yolo_attn/configs into an installed one."""
    here = Path(__file__).resolve()
    for folder in (here.parents[2] / "configs", here.parents[1] / "configs"):
        if (folder / "train.yaml").is_file():
            return folder / "train.yaml"
    return here.parents[2] / "configs" / "train.yaml"


DEFAULT_TRAIN_CONFIG = _default_train_config()

# Names, paths and choices: their values stay text, so a run called 2024, a folder named "123" or a file
# named "yes" is not read as a number or a boolean. Those that default to null still take null (~, empty).
STRING_KEYS = ("name", "project", "device", "optimizer", "assigner", "data", "root", "weights", "classes", "resume")
NULLABLE_STRING_KEYS = ("data", "root", "weights", "classes", "resume")
_NULL_WORDS = ("null", "Null", "NULL", "~", "")


def _read_yaml(path: Path) -> Dict[str, Any]:
    return read_yaml_mapping(path, "training config")


def _parse_value(text: str, key: str = "") -> Any:
    """Command-line values: the text itself for STRING_KEYS (None for null); else numbers first (YAML 1.1
    would read 1e-3 as a string), then YAML for null, true, [1, 2], {a: 1}; anything else stays a string."""
    if key in STRING_KEYS:
        return None if key in NULLABLE_STRING_KEYS and text in _NULL_WORDS else text
    number = _as_number(text)
    if number is not text:
        return number
    try:
        return _yaml_numbers(yaml.safe_load(text))
    except yaml.YAMLError:
        return text


def _as_number(text: str) -> Any:
    """The int or float ``text`` spells, else ``text`` itself."""
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _yaml_numbers(value: Any) -> Any:
    """``value`` from YAML with numbers it left as text made numbers: YAML 1.1 reads 1e-3 and 5e-4 (no dot in
    the mantissa) as strings, which then break the arithmetic."""
    if isinstance(value, dict):
        return {k: _yaml_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_yaml_numbers(v) for v in value]
    return _as_number(value) if isinstance(value, str) else value


def _set(cfg: Dict[str, Any], dotted: str, value: Any, known: Dict[str, Any]) -> None:
    keys = dotted.split(".")
    if keys[0] not in known:
        raise ValueError(f"unknown option --{dotted.replace('_', '-')}; known: "
                         + ", ".join(f"--{k.replace('_', '-')}" for k in sorted(known)))
    node = cfg
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise ValueError(f"--{dotted}: '{k}' is not a group of options")
    node[keys[-1]] = value


def _defaults() -> Dict[str, Any]:
    return _read_yaml(DEFAULT_TRAIN_CONFIG) if DEFAULT_TRAIN_CONFIG.is_file() else {}


def load_train_config(
    path: Optional[str] = None, overrides: Optional[Dict[str, Any]] = None
) -> Dict[str, Any]:
    """Defaults from configs/train.yaml, then the keys of ``path`` (a user YAML), then ``overrides``
    (``{"lr": 0.01, "aug.mosaic": 0.5}``). An ``epochs`` given with ``time`` left at ``auto`` (not given, or
    ``auto`` as configs/train.yaml has it, in a copy of it) is taken as it is: the embedded dataset's time budget
    applies only where the epoch count was left alone. A number (or null) for ``time`` stays as given."""
    defaults = _defaults()
    cfg = copy.deepcopy(defaults)
    given = set()
    if path:
        for k, v in _read_yaml(Path(path)).items():
            _set(cfg, k, v if k.split(".")[0] in STRING_KEYS else _yaml_numbers(v), defaults or cfg)
            given.add(k)
    for k, v in (overrides or {}).items():
        _set(cfg, k, v, defaults or cfg)
        given.add(k)
    if "epochs" in given and cfg.get("time") == "auto":
        cfg["time"] = None
    _check_types(cfg, defaults)
    for k in STRING_KEYS:  # `name: 2024` in a YAML file, or name=2024 from Python
        v = cfg.get(k)
        if isinstance(v, bool):  # YAML reads no, off, false (and yes, on, true) as booleans
            if v or k not in NULLABLE_STRING_KEYS:
                raise ValueError(f"{k}: YAML reads yes/no, on/off and true/false as booleans, not as text; "
                                 f"quote it ({k}: \"{'yes' if v else 'no'}\")")
            cfg[k] = None  # `weights: false`: none
        elif isinstance(v, (int, float)):
            cfg[k] = str(v)
    return cfg


# Keys whose default is a number but which also take a name (phi: cbam) are left to the code that reads them.
_NAMED_NUMBER_KEYS = ("phi",)
_AT_LEAST_ONE = ("epochs", "batch_size", "eval_batch_size", "eval_interval")
# Numbers a run cannot use outside these ranges (None: unbounded), checked before any data is read.
_RANGES = {
    "lr": (0.0, None), "momentum": (0.0, 1.0), "weight_decay": (0.0, None), "warmup_epochs": (0.0, None),
    "warmup_bias_lr": (0.0, None), "min_lr_ratio": (0.0, 1.0), "grad_clip": (0.0, None), "ema_decay": (0.0, 1.0),
    "freeze_epochs": (0, None), "patience": (0, None), "save_period": (0, None), "anchor_t": (1.0, None),
    "ignore_thresh": (0.0, 1.0),
    "box": (0.0, None), "obj": (0.0, None), "cls": (0.0, None), "label_smoothing": (0.0, 1.0),
    "iou_ratio": (0.0, 1.0), "close_mosaic": (0, None), "eval_conf": (0.0, 1.0), "eval_iou": (0.0, 1.0),
}
_POSITIVE = ("ema_tau",)  # above 0: divided by
_CHOICES = {"optimizer": ("adamw", "sgd"), "assigner": ASSIGNERS}


def _check_types(cfg: Dict[str, Any], defaults: Dict[str, Any]) -> None:
    """A ValueError naming the key for a value of another kind than its default's (a word where a number
    goes), so that a typo fails here, in one line, not as a TypeError deep in training."""
    for key, default in defaults.items():
        value = cfg.get(key)
        if key in _NAMED_NUMBER_KEYS and isinstance(value, str):
            continue
        if isinstance(default, bool):
            ok, kind = isinstance(value, bool), "true or false"
        elif isinstance(default, int):
            ok, kind = isinstance(value, int) and not isinstance(value, bool), "a whole number"
        elif isinstance(default, float):
            ok, kind = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
        elif isinstance(default, list) and all(isinstance(v, (int, float)) for v in default):
            ok = isinstance(value, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                 for v in value)
            kind = "a list of numbers"
        else:
            continue
        if not ok:
            raise ValueError(f"{key}: {value!r} is not {kind} (default {default!r})")
        if key in _AT_LEAST_ONE and value < 1:
            raise ValueError(f"{key}: {value} must be at least 1")
        low, high = _RANGES.get(key, (None, None))
        if (low is not None and not value >= low) or (high is not None and not value <= high):  # NaN too
            where = f"from {low} to {high}" if high is not None else f"at least {low}"
            raise ValueError(f"{key}: {value} must be {where} (default {default!r})")
        if key in _POSITIVE and not value > 0:
            raise ValueError(f"{key}: {value} must be above 0 (default {default!r})")
    for key, choices in _CHOICES.items():
        if cfg.get(key) not in choices:
            raise ValueError(f"{key}: {cfg.get(key)!r} is not one of {', '.join(choices)}")
    # keys whose default is a word but which take numbers or switches too (left out above)
    budget = cfg.get("time")
    if budget not in (None, "auto") and (isinstance(budget, bool) or not isinstance(budget, (int, float))
                                         or not budget > 0):
        raise ValueError(f"time: {budget!r} is not a number of minutes above 0, auto or null")
    if cfg.get("amp") not in (True, False, None, "auto", "on", "off", "true", "false"):
        raise ValueError(f"amp: {cfg.get('amp')!r} is not auto, true or false")
    check_aug(cfg.get("aug"))  # here, not at the first batch: a bad range fails before the run starts
    # SGD's Nesterov momentum needs some; AdamW's beta1 must stay below 1
    momentum = cfg["momentum"]
    if (cfg["optimizer"] == "sgd" and momentum == 0) or (cfg["optimizer"] == "adamw" and momentum == 1):
        raise ValueError(f"momentum: {momentum} does not suit {cfg['optimizer']} (sgd: above 0, adamw: below 1)")


def _options_text() -> str:
    """The options for --help: configs/train.yaml itself (each key, its default and what it does), which is
    what the flags override, so the help cannot drift from it."""
    if not DEFAULT_TRAIN_CONFIG.is_file():
        return ""
    lines = DEFAULT_TRAIN_CONFIG.read_text(encoding="utf-8").splitlines()
    first = next((i for i, line in enumerate(lines) if line and not line.startswith("#")), len(lines))
    return "options (--key value; the defaults of configs/train.yaml):\n" + "\n".join(
        f"  {line}" if line else "" for line in lines[first:])


def parse_train_args(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Parse ``tools/train.py`` arguments: ``--config FILE`` plus ``--key value`` for any config key."""
    parser = argparse.ArgumentParser(
        description="Train YOLOv4-tiny with an attention neck. Any key of configs/train.yaml is a flag\n"
        "(--epochs 10, --batch-size 16, --aug.mosaic 0.5); with no --data the embedded shapes dataset is used.",
        epilog=_options_text(), formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", help="YAML file of options (over configs/train.yaml)")
    args, rest = parser.parse_known_args(argv)
    overrides: Dict[str, Any] = {}
    i = 0
    while i < len(rest):
        flag = rest[i]
        if not flag.startswith("--"):
            parser.error(f"unexpected argument '{flag}'")
        key = flag[2:]
        if "=" in key:
            key, value = key.split("=", 1)
            i += 1
        elif i + 1 < len(rest) and not rest[i + 1].startswith("--"):
            value = rest[i + 1]
            i += 2
        else:
            value = None  # a bare flag: --compile
            i += 1
        key = key.replace("-", "_")
        if value is None:
            if "." not in key and not isinstance(_defaults().get(key, True), bool):
                parser.error(f"--{key.replace('_', '-')} needs a value")
            value = "true"
        overrides[key] = _parse_value(value, key)
    try:
        return load_train_config(args.config, overrides)
    except (ValueError, FileNotFoundError) as e:
        parser.error(str(e))
