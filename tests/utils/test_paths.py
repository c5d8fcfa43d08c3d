"""write_atomic and results_folder: files and folders named as asked."""
import errno
import tempfile

import pytest

from yolo_attn.utils.paths import write_atomic


def test_a_file_that_cannot_be_written_is_named_as_asked(tmp_path, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / ".out.onnx.abc123.tmp"))

    monkeypatch.setattr(tempfile, "mkstemp", full)
    with pytest.raises(OSError, match=rf"cannot write {tmp_path / 'out.onnx'} \(No space left on device\)") as info:
        write_atomic(tmp_path / "out.onnx", b"data")
    assert ".tmp" not in str(info.value) and info.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []


def test_results_folder_reuses_the_named_folder_with_exist_ok_and_names_a_file_in_the_way(tmp_path):
    from yolo_attn.utils.paths import results_folder

    assert results_folder(tmp_path / "runs" / "exp") == tmp_path / "runs" / "exp"
    assert results_folder(tmp_path / "runs" / "exp") == tmp_path / "runs" / "exp2"
    assert results_folder(tmp_path / "runs" / "exp", exist_ok=True) == tmp_path / "runs" / "exp"
    assert results_folder(tmp_path / "new" / "exp", exist_ok=True).is_dir()  # made when missing
    (tmp_path / "file").write_text("x")
    for path in (tmp_path / "file", tmp_path / "file" / "exp"):  # the file at the folder, or above it
        with pytest.raises(NotADirectoryError, match=f"^{tmp_path / 'file'}: a file stands where"):
            results_folder(path, exist_ok=True)
