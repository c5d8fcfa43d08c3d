"""write_atomic: a file that cannot be written is named as asked, not by the temp file beside it."""
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
