"""Flags that several tools share: thresholds from 0 to 1 and counts of at least 1 are checked as they are
parsed, with one line naming the flag."""
import runpy
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parents[2] / "tools"


@pytest.mark.parametrize("tool", ["predict.py", "eval.py"])
@pytest.mark.parametrize("flag, value, message", [
    ("--conf", "2", "argument --conf: 2 is not between 0 and 1"),
    ("--conf", "-0.1", "argument --conf: -0.1 is not between 0 and 1"),
    ("--iou", "nan", "argument --iou: nan is not between 0 and 1"),
    ("--iou", "high", "argument --iou: 'high' is not a number"),
    ("--max-det", "0", "argument --max-det: 0 is not at least 1"),
    ("--max-det", "2.5", "argument --max-det: '2.5' is not a whole number"),
])
def test_out_of_range_thresholds_and_counts_are_refused(tool, flag, value, message, capsys):
    parser = runpy.run_path(str(TOOLS / tool))["build_parser"]()
    with pytest.raises(SystemExit):
        parser.parse_args(["--weights", "w.pt", flag, value])
    assert message in capsys.readouterr().err
    args = parser.parse_args(["--weights", "w.pt", "--conf", "0", "--iou", "1", "--max-det", "1"])
    assert (args.conf, args.iou, args.max_det) == (0.0, 1.0, 1)


@pytest.mark.parametrize("tool", ["predict.py", "eval.py", "export.py", "convert.py"])
def test_a_class_count_below_one_is_refused(tool, capsys):
    """convert.py --num-classes -3 made an empty class list and failed later on the head's shape."""
    parser = runpy.run_path(str(TOOLS / tool))["build_parser"]()
    argv = ["--weights", "w.pt"] + (["--from", "port", "--out", "o.pt"] if tool == "convert.py" else [])
    with pytest.raises(SystemExit):
        parser.parse_args(argv + ["--num-classes", "-3"])
    assert "argument --num-classes: -3 is not at least 1" in capsys.readouterr().err
    assert parser.parse_args(argv + ["--num-classes", "2"]).num_classes == 2
