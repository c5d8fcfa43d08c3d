"""increment_path (shared by every tool that writes runs/<task>/<name>) and write_atomic."""
import os

from yolo_attn.utils.paths import increment_path, write_atomic


def test_increment_path_folders_and_files(tmp_path):
    base = tmp_path / "runs" / "eval" / "exp"
    assert increment_path(base) == base and not base.exists()  # nothing is created without mkdir
    assert increment_path(base, mkdir=True) == base and base.is_dir()
    assert increment_path(base, mkdir=True) == base.with_name("exp2")
    assert increment_path(base, mkdir=True) == base.with_name("exp3")
    assert increment_path(base) == base.with_name("exp4")
    (tmp_path / "results.csv").write_text("x")
    assert increment_path(tmp_path / "results.csv") == tmp_path / "results2.csv"


def test_write_atomic_replaces_whole_files_and_leaves_no_temp(tmp_path):
    path = tmp_path / "out" / "metrics.json"
    write_atomic(path, "first")
    write_atomic(path, b"second")
    assert path.read_text() == "second"
    assert os.listdir(path.parent) == ["metrics.json"]
    assert path.stat().st_mode & 0o777 == 0o644
