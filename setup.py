"""yolo-attn: YOLOv4-tiny with a selectable attention neck (SE, CBAM, ECA, CoordAtt, GC)."""
from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).parent
version = {}
exec((here / "yolo_attn" / "version.py").read_text(), version)

setup(
    name="yolo-attn",
    version=version["__version__"],
    description="YOLOv4-tiny with a phi-selected attention neck, faithful to Darknet, fast on CPU",
    long_description=(here / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=find_packages(include=["yolo_attn", "yolo_attn.*"]) + ["yolo_attn.configs"],
    # configs/ ships inside the package as yolo_attn/configs, so that an installed (not editable) copy has the
    # training defaults (configs/train.yaml) and the example data configs
    package_dir={"yolo_attn.configs": "configs"},
    package_data={"yolo_attn.configs": ["*.yaml"]},
    include_package_data=True,
    install_requires=[
        "torch>=2.1",
        "torchvision>=0.16",
        "numpy>=1.22",
        "opencv-python>=4.6",
        "pycocotools>=2.0.6",
        "albumentations>=2.0",  # Compose(seed=), set_random_state, GaussNoise(std_range=)
        "tqdm>=4.64",
        "pyyaml>=5.4",
        "scipy>=1.7",
        "matplotlib>=3.5",
        "pillow>=9.0",
    ],
    extras_require={
        "dev": ["pytest>=7", "onnx>=1.14", "onnxruntime>=1.16"],
        "export": ["onnx>=1.14", "onnxruntime>=1.16"],
        "openvino": ["openvino>=2024.0", "nncf>=2.9"],
    },
)
