"""yolo_attn: YOLOv4-tiny with a selectable attention neck."""
from .version import __version__

__all__ = ["__version__"]
