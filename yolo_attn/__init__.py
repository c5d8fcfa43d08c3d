"""yolo_attn: YOLOv4-tiny with a selectable attention neck."""
from .version import __version__

__all__ = ["__version__", "Detector"]


def __getattr__(name):
    if name == "Detector":  # lazy: `import yolo_attn` stays light
        from .inference.detector import Detector

        return Detector
    raise AttributeError(f"module 'yolo_attn' has no attribute {name!r}")
