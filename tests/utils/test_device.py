"""--device values: one check (yolo_attn.utils.device) behind training, evaluation and prediction."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from yolo_attn.utils.device import resolve_device

ROOT = Path(__file__).resolve().parents[2]
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the errors of a machine without CUDA")


def test_auto_and_names():
    expected = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    for name in ("auto", None, "", " AUTO "):
        assert resolve_device(name) == expected
    assert resolve_device("cpu") == resolve_device(" CPU ") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    for bad in ("foo", "cuda:x", "cuda:0:1", "-1"):
        with pytest.raises(ValueError, match=f"unknown device '{bad}'; use cpu, cuda or cuda:N"):
            resolve_device(bad)


@no_cuda
def test_cuda_missing_is_one_clear_error():
    for name in ("cuda", "cuda:1", "0", 0):
        with pytest.raises(ValueError, match=f"device '{name}': CUDA is not available here.*use --device cpu"):
            resolve_device(name)
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device("cuda", local_rank=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_index_and_local_rank():
    count = torch.cuda.device_count()
    assert resolve_device("0") == resolve_device(0) == torch.device("cuda", 0)
    assert resolve_device("cuda", local_rank=count - 1) == torch.device("cuda", count - 1)
    with pytest.raises(ValueError, match=f"this machine has {count} CUDA device"):
        resolve_device(f"cuda:{count}")


def test_a_missing_index_and_a_ddp_rank_without_a_gpu_are_told_apart(monkeypatch):
    """On a 1-GPU machine, cuda:5 names a GPU it lacks; a second DDP process (local rank 1) has no GPU of its own:
    that message says how many processes fit, or to train on the CPU."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("auto", local_rank=0) == torch.device("cuda", 0)
    with pytest.raises(ValueError, match=r"^device 'cuda:5': this machine has 1 CUDA device\(s\), cuda:0 to cuda:0$"):
        resolve_device("cuda:5")
    with pytest.raises(ValueError) as error:
        resolve_device("auto", local_rank=1)
    assert str(error.value) == (
        "device 'auto': DDP process of local rank 1 needs cuda:1, but this machine has 1 CUDA device(s); start at "
        "most 1 process(es) per node (torchrun --nproc_per_node 1), or train on the CPU with --device cpu")
    assert resolve_device("cpu", local_rank=1) == torch.device("cpu")  # the CPU takes any number of processes


@no_cuda
def test_train_tool_reports_a_missing_gpu_in_one_line(tmp_path):
    """tools/train.py printed a RuntimeError traceback for --device cuda on a machine without one."""
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "train.py"), "--device", "cuda", "--epochs", "1",
                             "--project", str(tmp_path)], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("error: device 'cuda': CUDA is not available here")
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1
