"""Prediction: the Detector API, backends (PyTorch, ONNX Runtime, OpenVINO), sources, drawing, the heat-map
and attention views, and export.

    from yolo_attn.inference import Detector
    det = Detector.load("best.pt")
    result = det("bus.jpg")          # boxes (x1 y1 x2 y2, original pixels), scores, labels, names
"""
from .backends import BACKENDS, Backend, available_backends, create_backend, register_backend
from .detector import Detections, Detector, load_image

__all__ = [
    "BACKENDS",
    "Backend",
    "Detections",
    "Detector",
    "available_backends",
    "create_backend",
    "load_image",
    "register_backend",
]
