"""The README's Python: every name it imports exists where it says, and its evaluation snippet runs as written
(on a small dataset and checkpoint of the test's own in place of its file names)."""
import re
from importlib import import_module
from pathlib import Path

import torch

from yolo_attn.models import build_model
from yolo_attn.utils.checkpoint import make_meta, save_checkpoint

from .eval.eval_fakes import NAMES, write_yolo_dataset

README = Path(__file__).resolve().parents[1] / "README.md"


def test_every_import_in_the_readme_resolves():
    imports = re.findall(r"^\s+from (yolo_attn[\w.]*) import ([\w, ]+)$", README.read_text(), re.M)
    assert len(imports) >= 5
    for module, names in imports:
        for name in (n.strip() for n in names.split(",")):
            assert hasattr(import_module(module), name), f"README: from {module} import {name}"


def test_the_evaluation_snippet_runs_as_written(tmp_path):
    text = README.read_text()
    start = text.index("    from yolo_attn.data import build_dataset")
    snippet = text[start:text.index("\n\n", start)]
    assert "evaluate(model, dataset" in snippet and "print_report(result)" in snippet
    torch.manual_seed(0)
    model = build_model(0, len(NAMES)).eval()
    weights = tmp_path / "best.pt"
    save_checkpoint({"meta": make_meta(model, NAMES, img_size=64), "model": model.state_dict()}, weights)
    config = write_yolo_dataset(tmp_path / "ds", num_images=2)
    out = tmp_path / "mine"
    code = "\n".join(line[4:] for line in snippet.splitlines())
    code = (code.replace('"best.pt"', repr(str(weights))).replace('"configs/voc.yaml"', repr(str(config)))
            .replace('"runs/eval/mine"', repr(str(out))))
    scope = {}
    exec(code, scope)
    assert {"voc12_map50", "coco_map"} <= set(scope["result"]) and (out / "metrics.json").is_file()
