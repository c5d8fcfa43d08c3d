"""Output paths: a fresh run folder per run (never overwrite results) and atomic file writes."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Union

__all__ = ["increment_path", "remove_if_empty", "results_folder", "write_atomic"]


def increment_path(base: Union[str, os.PathLike], mkdir: bool = False) -> Path:
    """``base`` if it does not exist yet, else the first free of ``base2``, ``base3``, ... (a file keeps
    its suffix: ``results.csv`` -> ``results2.csv``). As in ``runs/eval/exp``, ``exp2``, ...

    ``mkdir=True`` creates the folder, and claims the name atomically: two runs started at the same
    moment never get the same folder.
    """
    base = Path(base)
    stem, suffix = (base.stem, base.suffix) if base.suffix and not base.is_dir() else (base.name, "")
    n = 1
    while True:
        path = base if n == 1 else base.with_name(f"{stem}{n}{suffix}")
        if mkdir:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except (FileExistsError, NotADirectoryError):
                blocking = next((p for p in (path.parent, *path.parent.parents) if p.exists()), path.parent)
                raise NotADirectoryError(f"{blocking}: a file stands where the results folder goes") from None
            try:
                path.mkdir()
                return path
            except FileExistsError:
                pass
            except PermissionError:
                raise PermissionError(f"{path.parent}: no permission to make the results folder "
                                      f"{path.name} there") from None
        elif not path.exists():
            return path
        n += 1


def results_folder(path: Union[str, os.PathLike], exist_ok: bool = False) -> Path:
    """The folder a run writes into: ``path`` itself with ``exist_ok`` (made when missing; one there is written
    into, its files of the same names replaced, as YOLOv5's --exist-ok), else the first free of ``path``,
    ``path2``, ... claimed as it is named (:func:`increment_path`)."""
    path = Path(path)
    if not exist_ok:
        return increment_path(path, mkdir=True)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):  # a file at the path, or at a folder above it
        blocking = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), path)
        raise NotADirectoryError(f"{blocking}: a file stands where the results folder goes") from None
    return path


def remove_if_empty(folder: Union[str, os.PathLike, None]) -> None:
    """Take back a results folder a run claimed but wrote nothing into (rmdir never removes content)."""
    if folder is not None:
        try:
            os.rmdir(folder)
        except OSError:
            pass


def write_atomic(path: Union[str, os.PathLike], data: Union[bytes, str]) -> None:
    """Write ``data`` to a temp file next to ``path``, then rename over it: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:  # its message would name the temp file, which the caller never asked for
        raise OSError(e.errno, f"cannot write {path} ({e.strerror})") from None
    try:
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; results are meant to be shared
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())  # the rename must never point at data still only in the page cache
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
