"""One place that turns a ``--device`` value into a torch device checked against this machine."""
from typing import Optional, Union

import torch

__all__ = ["resolve_device"]


def resolve_device(name: Union[None, int, str, torch.device] = "auto", local_rank: int = -1) -> torch.device:
    """The device ``name`` asks for, checked before a model or a dataset is moved there (torch's own errors
    are tracebacks from deep inside ``Module.to``, after the data has loaded).

    ``auto`` (or None / "") is the first GPU when CUDA is present, else the CPU; a bare index (``0``) names a
    GPU, as in Ultralytics and YOLOX; under DistributedDataParallel (``local_rank >= 0``) a CUDA device is the
    local rank's. Raises ValueError, one line a tool can print, for a name torch does not know or a device
    this machine lacks.
    """
    text = "auto" if name is None else str(name).strip().lower()
    if text in ("", "auto"):
        text = "cuda" if torch.cuda.is_available() else "cpu"
    elif text.isdigit():
        text = f"cuda:{text}"
    try:
        device = torch.device(text)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device '{name}'; use cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device '{name}': CUDA is not available here (no NVIDIA GPU visible, or this "
                             f"PyTorch {torch.__version__} is built without CUDA); use --device cpu")
        count = torch.cuda.device_count()
        if local_rank >= 0:
            device = torch.device("cuda", local_rank)
            if local_rank >= count:  # more DDP processes on this node than GPUs
                raise ValueError(f"device '{name}': DDP process of local rank {local_rank} needs cuda:{local_rank}, "
                                 f"but this machine has {count} CUDA device(s); start at most {count} process(es) "
                                 f"per node (torchrun --nproc_per_node {count}), or train on the CPU with "
                                 f"--device cpu")
        if device.index is not None and device.index >= count:
            raise ValueError(f"device '{name}': this machine has {count} CUDA device(s), cuda:0 to "
                             f"cuda:{count - 1}")
    elif device.type != "cpu":
        module: Optional[object] = getattr(torch, device.type, None)  # mps, xpu, ... where this torch has them
        if module is None or not hasattr(module, "is_available") or not module.is_available():
            raise ValueError(f"device '{name}': not available to PyTorch here; use cpu, cuda or cuda:N")
    return device
