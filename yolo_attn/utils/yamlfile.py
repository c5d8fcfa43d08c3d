"""Reading the YAML files users write (data and training configs), with errors that name the file."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

import yaml

__all__ = ["read_yaml_mapping"]


def read_yaml_mapping(path: Path, what: str, missing_hint: str = "", keys_hint: str = "") -> Dict[str, Any]:
    """The mapping in a YAML file; clear errors for a missing file, bad YAML or a non-mapping.

    ``what`` names the file's kind in messages ("data config"); the hints say what to do or what it holds.
    """
    path = Path(path)
    if path.is_dir():  # "no such data config" would send the user looking for a missing file
        hint = f"; {missing_hint}" if missing_hint else ""
        raise ValueError(f"{path}: a folder, not a {what} (a YAML file){hint}")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such {what}{f' ({missing_hint})' if missing_hint else ''}")
    try:
        cfg = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: a {what} is a mapping{f' ({keys_hint})' if keys_hint else ' of keys to values'}")
    return cfg
