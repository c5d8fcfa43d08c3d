"""An installed copy (pip install ., not -e) carries what the code reads from configs/: the training defaults."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_an_installed_copy_has_the_training_defaults(tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(ROOT)], check=True, capture_output=True, timeout=300)
    assert (target / "yolo_attn" / "configs" / "train.yaml").read_text() == (ROOT / "configs/train.yaml").read_text()
    code = ("import yolo_attn.engine.config as c; cfg = c.load_train_config(None, {}); "
            "print(c.DEFAULT_TRAIN_CONFIG, cfg['patience'], cfg['optimizer'])")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={"PYTHONPATH": str(target), "PATH": ""},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(target / "yolo_attn/configs/train.yaml"), "100", "adamw"]
