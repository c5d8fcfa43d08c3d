"""The trainer: learning, files written, resume after SIGKILL, freeze, init from weights, DDP."""
import csv
import json
import logging
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
import yaml

from yolo_attn.data import build_dataset, build_train_loader, load_data_config
from yolo_attn.engine.config import load_train_config
from yolo_attn.engine.ema import ModelEMA
from yolo_attn.engine.schedule import WarmupCosine
from yolo_attn.engine.trainer import (_amp_dtype, _fit_epochs_to_time, auto_workers, build_loss, build_optimizer,
                                      init_head_biases, train, train_one_epoch)
from yolo_attn.eval.evaluator import evaluate
from yolo_attn.models import build_model
from yolo_attn.models.darknet import save_darknet_weights
from yolo_attn.utils.checkpoint import load_checkpoint, load_model
from yolo_attn.utils.device import resolve_device

ROOT = Path(__file__).resolve().parents[2]
NO_AUG = {"mosaic": 0.0, "mixup": 0.0, "scale": 0.0, "translate": 0.0, "hsv_h": 0.0, "hsv_s": 0.0, "hsv_v": 0.0,
          "blur": 0.0, "noise": 0.0, "flip": 0.0}


def _cfg(tiny_data, tmp_path, **kw):
    base = dict(data=str(tiny_data), img_size=128, batch_size=4, workers=0, project=str(tmp_path / "runs"),
                epochs=2, eval_batch_size=4, close_mosaic=1, warmup_epochs=0.5, phi=0)
    base.update(kw)
    return load_train_config(None, base)


def _parts(phi, tiny_data, aug=NO_AUG, **overrides):
    """Model, dataset, loader, loss and optimizer as the trainer builds them from its default config."""
    cfg = load_train_config(None, dict(img_size=128, **overrides))
    data = load_data_config(str(tiny_data))
    ds = build_dataset(data, "train")
    model = build_model(phi, len(data["names"]))
    init_head_biases(model, cfg["img_size"])
    loader = build_train_loader(ds, img_size=cfg["img_size"], batch_size=4, workers=0, aug=aug, seed=0)
    opt = build_optimizer(model, cfg["optimizer"], cfg["lr"], cfg["momentum"], cfg["weight_decay"])
    return model, ds, loader, build_loss(cfg, model), opt


def test_a_few_images_are_learned_in_a_few_hundred_iterations(tiny_data):
    torch.manual_seed(0)
    model, ds, loader, loss, opt = _parts(0, tiny_data)
    epochs = 150  # 2 iterations each
    sched = WarmupCosine(opt, epochs * len(loader), 20)
    ema = ModelEMA(model, 0.999, 50)
    cpu = torch.device("cpu")
    for epoch in range(epochs):  # in the precision the trainer picks here (bf16 with AMX, else fp32)
        stats = train_one_epoch(model, loader, loss, opt, sched, ema, cpu, epoch, epochs,
                                amp_dtype=_amp_dtype("auto", cpu), verbose=False, img_size=128)
    assert math.isfinite(stats["train/box"])
    # the trained weights themselves: over 300 iterations the EMA still lags a little behind them
    result = evaluate(model, ds, img_size=128, metrics=("voc12",), scale_x_y=2.0, verbose=False)
    assert result["voc12_map50"] > 0.9


def test_a_bf16_autocast_step_learns_on_any_cpu(tiny_data):
    """bf16 (``--amp true``) on CPUs without AMX too: finite losses, and the loss falls over a few steps."""
    torch.manual_seed(0)
    model, ds, loader, loss, opt = _parts(0, tiny_data)
    epochs = 6
    sched = WarmupCosine(opt, epochs * len(loader), 2)
    first = last = None
    for epoch in range(epochs):
        stats = train_one_epoch(model, loader, loss, opt, sched, None, torch.device("cpu"), epoch, epochs,
                                amp_dtype=torch.bfloat16, verbose=False, img_size=128)
        total = stats["train/box"] + stats["train/obj"] + stats["train/cls"]
        assert math.isfinite(total)
        first, last = first if first is not None else total, total
    assert last < first


@pytest.mark.parametrize("phi", range(6))
def test_every_phi_trains(phi, tiny_data):
    torch.manual_seed(0)
    model, _, loader, loss, opt = _parts(phi, tiny_data, aug={})
    before = [p.detach().clone() for p in model.parameters()]
    # no warm-up: the first step moves GC's zero-initialized last conv (GCNet), so the second reaches the
    # layers behind it
    sched = WarmupCosine(opt, len(loader), 0)
    stats = train_one_epoch(model, loader, loss, opt, sched, None, torch.device("cpu"), 0, 1, verbose=False)
    assert all(math.isfinite(v) for v in stats.values())
    changed = sum(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert changed == len(before)


def test_a_non_finite_loss_names_the_batch_images(tiny_data):
    model, _, loader, loss, opt = _parts(0, tiny_data)
    images, targets, infos = next(iter(loader))
    images[0, 0, 0, 0] = float("nan")
    sched = WarmupCosine(opt, 1, 0)
    with pytest.raises(FloatingPointError, match=str(Path(infos[0]["path"]).name)):
        train_one_epoch(model, [(images, targets, infos)], loss, opt, sched, None, torch.device("cpu"), 0, 1,
                        verbose=False)


def test_a_run_writes_weights_logs_and_plots(tiny_data, tmp_path):
    cfg = _cfg(tiny_data, tmp_path, name="exp")
    run = train(cfg)
    again = train(dict(cfg, eval_img_size=160, workers="auto"))
    assert again.name == "exp2" and run.name == "exp"  # never overwrites
    # "auto" as the run resolved it, for the device it trained on (cfg's device: auto, the GPU where there is one)
    saved = yaml.safe_load((again / "config.yaml").read_text())["workers"]
    assert saved == auto_workers(resolve_device(cfg["device"]))
    for name in ("weights/last.pt", "weights/best.pt", "results.csv", "results.png", "config.yaml",
                 "best_pr_curve.png", "best_confusion_matrix.png"):
        assert (run / name).is_file(), name
    rows = list(csv.DictReader(open(run / "results.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert all(r[k] != "" for r in rows for k in ("map50", "map50_95", "precision", "recall"))
    ckpt = load_checkpoint(run / "weights/last.pt")
    for key in ("meta", "model", "ema", "optimizer", "scheduler", "epoch", "config", "rng", "best_fitness"):
        assert key in ckpt
    assert ckpt["meta"]["names"] == ["box", "disc"] and ckpt["meta"]["scale_x_y"] == 2.0
    best = load_checkpoint(run / "weights/best.pt")  # not resumed: without the optimizer's state
    assert "optimizer" not in best and best["epoch"] in (0, 1) and best["best_fitness"] == ckpt["best_fitness"]
    with pytest.raises(ValueError, match=r"best.pt: a run's best weights, kept without the optimizer's state: "
                                         r"resume from .*last.pt"):
        train(dict(cfg, resume=str(run / "weights/best.pt")))
    model, meta = load_model(run / "weights/best.pt")  # usable with no config
    assert model.num_classes == 2 and meta["img_size"] == 128
    assert load_checkpoint(again / "weights/best.pt")["meta"]["img_size"] == 160  # validated at 160, predicts at 160


def test_auto_workers_leaves_a_two_core_cpu_to_the_training_step():
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert auto_workers(cpu, cpus=2) == 0 and auto_workers(cpu, cpus=1) == 0
    assert auto_workers(cpu, cpus=16) == 2
    assert auto_workers(gpu, cpus=32) == 8 and auto_workers(gpu, world=4, cpus=16) == 4
    assert auto_workers(gpu, cpus=1) == 1
    assert load_train_config(None, {})["workers"] == "auto"  # the default config asks for it


def test_an_epoch_count_given_turns_the_embedded_time_budget_off(tmp_path):
    """`--epochs 10` on the embedded dataset was re-fitted to its 29-minute budget (61 epochs after one at 128 px):
    an epoch count given alone is taken as it is; with --time too, the budget fits it as before."""
    from yolo_attn.engine.config import parse_train_args

    assert load_train_config(None, {})["time"] == "auto"
    assert parse_train_args(["--epochs", "10"])["time"] is None
    assert parse_train_args(["--epochs", "10", "--time", "5"])["time"] == 5
    (tmp_path / "my.yaml").write_text("epochs: 3\n")
    assert parse_train_args(["--config", str(tmp_path / "my.yaml")])["time"] is None
    assert parse_train_args(["--lr", "0.01"])["time"] == "auto"
    (tmp_path / "copy.yaml").write_text((ROOT / "configs" / "train.yaml").read_text())  # says time: auto
    assert parse_train_args(["--config", str(tmp_path / "copy.yaml"), "--epochs", "10"])["time"] is None
    assert parse_train_args(["--epochs", "10", "--time", "null"])["time"] is None


def test_a_time_budget_is_filled_with_whole_epochs():
    assert _fit_epochs_to_time(28, 400, [400], 1) == 4      # 4.2 epochs
    assert _fit_epochs_to_time(28, 424.5, [424.5], 1) == 4  # 3.96: the fourth ends 18 s late, still kept
    assert _fit_epochs_to_time(28, 480, [480], 1) == 3      # 3.5: a fourth would end 3.5 min late
    assert _fit_epochs_to_time(1, 600, [600], 1) == 2       # the first epoch alone overran: one more, to close


def test_a_time_budget_is_refitted_at_the_mean_epoch_time():
    # a slow first epoch: 1800 s hold 4.5 of its kind, but the faster second leaves room for a fifth
    assert _fit_epochs_to_time(30, 400, [400], 1) == 4
    assert _fit_epochs_to_time(30, 700, [400, 300], 1) == 5  # 1100 s left at 350 s: 3.1 more
    # the mean, not the last epoch, judges the rest: 580 s left hold 1.6 epochs of 367 s (not 1.9 of 300)
    assert _fit_epochs_to_time(28, 1100, [500, 300, 300], 1) == 4
    assert _fit_epochs_to_time(28, 1800, [600, 600, 600], 1) == 4  # already over: one more, to close


def test_freeze_keeps_the_backbone_fixed(tiny_data, tmp_path):
    cfg = _cfg(tiny_data, tmp_path, epochs=1, freeze_epochs=1, ema=False)
    run = train(cfg)
    ckpt = load_checkpoint(run / "weights/last.pt")
    torch.manual_seed(cfg["seed"])  # the run seeds torch the same way before building its model
    start = build_model(0, 2)
    key = "backbone.stage2.conv1.conv.weight"
    assert torch.equal(ckpt["model"][key], start.state_dict()[key])
    assert not torch.equal(ckpt["model"]["head_p4.conv.conv.weight"], start.state_dict()["head_p4.conv.conv.weight"])


def test_darknet_weights_initialize_all_but_a_mismatched_head(tiny_data, tmp_path):
    source = build_model(0, 80)
    path = tmp_path / "yolov4-tiny.weights"
    save_darknet_weights(source, path)
    run = train(_cfg(tiny_data, tmp_path, epochs=1, weights=str(path), lr=0.0, warmup_bias_lr=0.0, ema=False))
    state = load_checkpoint(run / "weights/last.pt")["model"]
    key = "backbone.stage1.conv2.conv.weight"
    assert torch.equal(state[key], source.state_dict()[key])
    assert state["head_p5.pred.weight"].shape[0] == 3 * 7


def test_darknet_weights_with_names_carry_the_class_channels_by_name(tiny_data, tmp_path, caplog):
    """yolov4-tiny.weights of [disc, cat, box] (names beside them) fine-tuned on [box, disc]: as for our
    checkpoints, each class starts from its own channels; the attention asked for is built (Darknet has none)."""
    source = build_model(0, 3)
    save_darknet_weights(source, tmp_path / "yolov4-tiny.weights")
    (tmp_path / "yolov4-tiny.names").write_text("disc\ncat\nbox\n")
    with caplog.at_level(logging.INFO, logger="yolo_attn"):
        run = train(_cfg(tiny_data, tmp_path, epochs=1, phi=1, weights=str(tmp_path / "yolov4-tiny.weights"),
                         lr=0.0, warmup_bias_lr=0.0, ema=False, img_size=64, amp=False))
    assert "class channels by name: 2 of 2 classes carried over" in caplog.text
    ckpt = load_checkpoint(run / "weights/last.pt")
    assert ckpt["meta"]["model"]["attention"] == "se"
    got, src = ckpt["model"]["head_p5.pred.weight"], source.state_dict()["head_p5.pred.weight"]
    for anchor in range(3):
        for k, j in ((0, 2), (1, 0)):  # box <- source class 2, disc <- source class 0
            assert torch.equal(got[anchor * 7 + 5 + k], src[anchor * 8 + 5 + j])


def test_darknet_weights_bring_the_anchors_of_their_cfg(tiny_data, tmp_path):
    """obj_best.weights beside obj.cfg (Darknet's names): the cfg's anchors and masks are the weights' own; the
    config's `anchors` still replace them."""
    from yolo_attn.models.darknet import write_darknet_cfg

    anchors, masks = [(12, 16), (19, 36), (40, 28), (36, 75), (76, 55), (72, 146)], [(3, 4, 5), (0, 1, 2)]
    source = build_model(0, 2, anchors, masks)
    write_darknet_cfg(source, tmp_path / "obj.cfg")
    save_darknet_weights(source, tmp_path / "obj_best.weights")
    common = dict(epochs=1, weights=str(tmp_path / "obj_best.weights"), lr=0.0, warmup_bias_lr=0.0, ema=False)
    meta = load_checkpoint(train(_cfg(tiny_data, tmp_path, **common)) / "weights/last.pt")["meta"]["model"]
    assert [tuple(a) for a in meta["anchors"]] == anchors and [tuple(m) for m in meta["anchor_masks"]] == masks
    given = [[10, 14], [23, 27], [37, 58], [81, 82], [135, 169], [344, 319]]
    meta = load_checkpoint(train(_cfg(tiny_data, tmp_path, anchors=given, **common)) / "weights/last.pt")["meta"]
    assert [list(a) for a in meta["model"]["anchors"]] == given


def test_our_checkpoint_gives_architecture_and_weights_but_not_its_head(tiny_data, tmp_path):
    """--weights of ours: the attention comes from the file (not --phi), matching tensors load, the head for
    another class count is rebuilt for this dataset."""
    from yolo_attn.utils.checkpoint import make_meta, save_checkpoint

    source = build_model("eca", 5)
    path = tmp_path / "eca5.pt"
    save_checkpoint({"meta": make_meta(source, [f"c{i}" for i in range(5)], 128), "model": source.state_dict()},
                    path)
    run = train(_cfg(tiny_data, tmp_path, epochs=1, phi=2, weights=str(path), lr=0.0, warmup_bias_lr=0.0,
                     ema=False))
    ckpt = load_checkpoint(run / "weights/last.pt")
    assert ckpt["meta"]["model"]["attention"] == "eca"
    key = "backbone.stage1.conv2.conv.weight"
    assert torch.equal(ckpt["model"][key], source.state_dict()[key])
    assert ckpt["model"]["head_p5.pred.weight"].shape[0] == 3 * 7


def test_attention_flags_replace_the_weights_block(tiny_data, tmp_path, caplog):
    """--attention cbam (or --phi 3, or --attention-kw) with weights of another block trained the weights'
    block without a word; it builds the block asked for, loads the tensors that fit and says so."""
    from yolo_attn.utils.checkpoint import make_meta, save_checkpoint

    source = build_model("se", 2)
    path = tmp_path / "se.pt"
    save_checkpoint({"meta": make_meta(source, ["box", "disc"], 128), "model": source.state_dict()}, path)
    common = dict(epochs=1, weights=str(path), lr=0.0, warmup_bias_lr=0.0, ema=False, time=None)
    for flags, attention, kw in ((dict(attention="cbam"), "cbam", {}), (dict(phi=3), "eca", {}),
                                 (dict(phi=2, attention_kw={"reduction": 4}), "se", {"reduction": 4}),
                                 (dict(phi=0), None, {})):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="yolo_attn"):
            run = train(_tiny_cfg(tiny_data, tmp_path, **common, **flags))
        ckpt = load_checkpoint(run / "weights/last.pt")
        assert (ckpt["meta"]["model"]["attention"], ckpt["meta"]["model"]["attention_kw"]) == (attention, kw)
        assert "building" in caplog.text and "as asked" in caplog.text
        if attention is None:  # no block: said as a name, and the SE tensors are absent here, not of other shapes
            assert "the weights hold attention se; building none as asked" in caplog.text
            assert "skipped (not in this model): attn_" in caplog.text and "shape differs" not in caplog.text
        key = "backbone.stage1.conv2.conv.weight"
        assert torch.equal(ckpt["model"][key], source.state_dict()[key])


def _run_train(args, **kw):
    return subprocess.Popen([sys.executable, str(ROOT / "tools/train.py"), *args], **kw)


def test_resume_after_sigkill_continues_the_schedule(tiny_data, tmp_path):
    common = ["--data", str(tiny_data), "--img-size", "128", "--batch-size", "2", "--workers", "0",
              "--epochs", "4", "--eval-interval", "10", "--phi", "0", "--warmup-epochs", "1",
              "--project", str(tmp_path / "runs")]
    assert _run_train(common + ["--name", "full"]).wait(timeout=300) == 0
    proc = _run_train(common + ["--name", "killed"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = tmp_path / "runs/killed/results.csv"
    last = tmp_path / "runs/killed/weights/last.pt"
    deadline = time.time() + 240
    while time.time() < deadline and not last.exists():
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)  # mid-run, after at least one epoch was saved
    proc.wait()
    done = load_checkpoint(last)["epoch"]  # loads: never a torn file
    assert done < 3, "the run finished before it could be killed"
    assert _run_train(["--resume", str(last)]).wait(timeout=300) == 0
    full = list(csv.DictReader(open(tmp_path / "runs/full/results.csv")))
    resumed = list(csv.DictReader(open(results)))
    assert [r["epoch"] for r in resumed] == ["1", "2", "3", "4"][: len(resumed)] or len(resumed) >= 4
    by_epoch = {r["epoch"]: r for r in resumed}
    for row in full:  # the same lr at every epoch: the schedule continued where it stopped
        assert float(by_epoch[row["epoch"]]["lr"]) == pytest.approx(float(row["lr"]), rel=1e-6)


def test_resume_writes_only_into_the_run_it_continues(tiny_data, tmp_path, caplog):
    """--resume of a copied best.pt wrote config.yaml and weights/ two folders up (~/config.yaml for
    ~/models/best.pt) and cut any results.csv there; one older than the run's last.pt cut the run's own rows."""
    import shutil

    from yolo_attn.utils.checkpoint import save_checkpoint

    run = train(_cfg(tiny_data, tmp_path, epochs=2, eval_interval=5))
    rows = (run / "results.csv").read_text()
    elsewhere = tmp_path / "models" / "last.pt"
    elsewhere.parent.mkdir()
    shutil.copyfile(run / "weights" / "last.pt", elsewhere)
    with pytest.raises(ValueError, match=rf"not in a run folder .* --weights {elsewhere}$"):
        train(load_train_config(None, {"resume": str(elsewhere)}))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["models", "runs"]  # nothing written beside them
    older = load_checkpoint(run / "weights" / "last.pt")
    older["epoch"] = 0
    save_checkpoint(older, run / "weights" / "epoch1.pt")
    with pytest.raises(ValueError, match=r"epoch1.pt: epoch 1, but the run went on to epoch 2 .* resume from"):
        train(load_train_config(None, {"resume": str(run / "weights" / "epoch1.pt")}))
    config = (run / "config.yaml").stat().st_mtime_ns
    assert train(load_train_config(None, {"resume": str(run / "weights" / "last.pt")})) == run  # finished
    assert (run / "results.csv").read_text() == rows and (run / "config.yaml").stat().st_mtime_ns == config
    with caplog.at_level(logging.WARNING):  # options given along with --resume were dropped without a word
        train(load_train_config(None, {"resume": str(run / "weights" / "last.pt"), "lr": 0.1, "workers": 0}))
    assert "goes on with the run's own config; ignored: lr=0.1 (only --device and --workers apply" in caplog.text
    caplog.clear()
    last = load_checkpoint(run / "weights" / "last.pt")
    last["config"]["time"] = 5.0  # a run with a time budget (the embedded dataset's)
    save_checkpoint(last, run / "weights" / "last.pt")
    with caplog.at_level(logging.WARNING):  # --epochs turns the time budget off in the config: not a second option
        train(load_train_config(None, {"resume": str(run / "weights" / "last.pt"), "epochs": 7}))
    assert "ignored: epochs=7 (only" in caplog.text


def test_a_setup_mistake_leaves_no_run_folder(tiny_data, tmp_path):
    """A missing data config or weights file, or an unknown attention, failed after the run folder was made
    (and the next run took the name exp2)."""
    for mistake in ({"data": str(tmp_path / "missing.yaml")}, {"weights": str(tmp_path / "missing.pt")},
                    {"attention": "transformer"}, {"aug": {"colour": 0.5}}, {"optimizer": "adam"},
                    {"assigner": "atss"}):
        with pytest.raises((ValueError, FileNotFoundError)):
            train(_cfg(tiny_data, tmp_path, **mistake))
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_two_process_ddp_trains(tiny_data, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
           str(ROOT / "tools/train.py"), "--data", str(tiny_data), "--img-size", "128", "--batch-size", "2",
           "--workers", "0", "--epochs", "1", "--phi", "2", "--device", "cpu",  # gloo on the CPU: GPUs or not
           "--project", str(tmp_path / "runs"), "--name", "ddp"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    runs = list((tmp_path / "runs").iterdir())
    assert [r.name for r in runs] == ["ddp"]  # only rank 0 writes
    ckpt = load_checkpoint(runs[0] / "weights/last.pt")
    assert ckpt["epoch"] == 0 and not any(k.startswith("module.") for k in ckpt["model"])
    # each rank's own random stream, for a resume to continue (not rank 0's on every rank)
    assert len(ckpt["rng_ranks"]) == 2
    assert not torch.equal(ckpt["rng_ranks"][0]["torch"], ckpt["rng_ranks"][1]["torch"])
    # --batch-size is the total (2: one image a process); one that does not split is refused before the run
    assert "batch 2, img 128, device cpu x2 (1 per process)" in out.stderr + out.stdout
    cmd[cmd.index("--batch-size") + 1] = "3"
    cmd[cmd.index("--name") + 1] = "odd"
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode != 0 and "batch_size 3 is the batch over all 2 processes" in out.stderr
    assert not (tmp_path / "runs" / "odd").exists()


class _Stop(Exception):
    """Stands for a kill at a chosen point of a run."""


def _tiny_cfg(tiny_data, tmp_path, **kw):
    """A run of two iterations an epoch at 64 px, evaluated only at its last epoch."""
    return _cfg(tiny_data, tmp_path, img_size=64, eval_interval=100, amp=False, **kw)


def _clocked(monkeypatch, seconds):
    """Give the trainer a wall clock that advances only as epochs run, ``seconds(epoch)`` each, so that time
    budgets fit the same epoch counts on any machine; returns the list of (epoch, mosaic on) trained."""
    import yolo_attn.engine.trainer as trainer

    clock = {"now": 1000.0}
    monkeypatch.setattr(trainer, "time", SimpleNamespace(time=lambda: clock["now"], perf_counter=time.perf_counter))
    log, real = [], trainer.train_one_epoch

    def one_epoch(model, loader, *args, **kw):
        epoch = args[5]
        log.append((epoch, loader.dataset.mosaic_enabled))
        out = real(model, loader, *args, **kw)
        clock["now"] += seconds(epoch)
        return out

    monkeypatch.setattr(trainer, "train_one_epoch", one_epoch)
    return log


def _stop_after_checkpoint(monkeypatch, epoch_index):
    """Stop the run right after weights/last.pt of epoch ``epoch_index`` is written."""
    import yolo_attn.engine.trainer as trainer

    real = trainer.save_checkpoint

    def save(state, path):
        real(state, path)
        if Path(path).name == "last.pt" and state["epoch"] == epoch_index:
            raise _Stop

    monkeypatch.setattr(trainer, "save_checkpoint", save)
    return real


def _epochs_in_csv(run):
    return [int(r["epoch"]) for r in csv.DictReader(open(run / "results.csv"))]


def test_a_budgeted_run_stopped_in_its_first_epochs_resumes_within_the_budget(tiny_data, tmp_path, monkeypatch):
    import yolo_attn.engine.trainer as trainer

    speed = {"s": 60.0}
    _clocked(monkeypatch, lambda epoch: speed["s"])
    real_save = _stop_after_checkpoint(monkeypatch, 0)
    with pytest.raises(_Stop):  # 5 min at 60 s an epoch: fitted to 5 epochs after the first, far below 8
        train(_tiny_cfg(tiny_data, tmp_path, epochs=8, time=5, name="budget"))
    last = tmp_path / "runs/budget/weights/last.pt"
    ckpt = load_checkpoint(last)
    assert ckpt["epoch"] == 0 and ckpt["epochs"] == 5  # the checkpoint holds the fitted count
    assert ckpt["scheduler"]["total_iters"] == 5 * 2  # and the schedule stretched to it

    monkeypatch.setattr(trainer, "save_checkpoint", real_save)
    speed["s"] = 90.0  # the resumed run is slower: its fits, from the 60 s restored, cut the run to 4 epochs
    train(dict(load_train_config(None, {}), resume=str(last), workers=0))
    ckpt = load_checkpoint(last)
    assert ckpt["epoch"] == 3 and ckpt["epochs"] == 4
    assert ckpt["elapsed_s"] == pytest.approx(60 + 3 * 90)
    assert _epochs_in_csv(tmp_path / "runs/budget") == [1, 2, 3, 4]


def test_mosaic_follows_the_epoch_count_a_budget_fits(tiny_data, tmp_path, monkeypatch):
    """--epochs 3 --close-mosaic 3 with a budget that fits 5 epochs: mosaic is off for the last 3 of the 5,
    not for all of them (3 of 3 before the first fit)."""
    log = _clocked(monkeypatch, lambda epoch: 60.0)
    train(_tiny_cfg(tiny_data, tmp_path, epochs=3, time=5, close_mosaic=3, ema=False))
    assert log == [(0, True), (1, True), (2, False), (3, False), (4, False)]


def test_an_evaluation_that_fails_keeps_the_epochs_weights_and_the_run_resumes(tiny_data, tmp_path, monkeypatch,
                                                                               caplog):
    """An evaluation that raises (out of memory, a broken val image the loader cannot skip) once cost the
    epoch's training: the error now comes after last.pt is written, and the run goes on from it."""
    import yolo_attn.engine.trainer as trainer

    def failing(*a, **kw):
        raise MemoryError("evaluation out of memory")

    real = trainer.evaluate
    monkeypatch.setattr(trainer, "evaluate", failing)
    with caplog.at_level(logging.ERROR, logger="yolo_attn"), pytest.raises(MemoryError, match="out of memory"):
        train(_cfg(tiny_data, tmp_path, img_size=64, amp=False, epochs=3, ema=False, name="evalfail"))
    run = tmp_path / "runs/evalfail"
    ckpt = load_checkpoint(run / "weights/last.pt")
    assert ckpt["epoch"] == 0 and ckpt["metrics"] == {}
    assert not (run / "weights/best.pt").exists()  # no score, no best
    assert "epoch 1: the evaluation failed" in caplog.text and "--resume" in caplog.text
    assert _epochs_in_csv(run) == [1]

    monkeypatch.setattr(trainer, "evaluate", real)
    train(dict(load_train_config(None, {}), resume=str(run / "weights/last.pt"), workers=0))
    assert load_checkpoint(run / "weights/last.pt")["epoch"] == 2
    assert load_checkpoint(run / "weights/best.pt")["metrics"]
    assert _epochs_in_csv(run) == [1, 2, 3]


def test_root_gives_the_dataset_folder_in_place_of_the_configs(tiny_data, tmp_path):
    """The same dataset elsewhere (another machine, a mounted copy): --root, as tools/check_data.py and
    tools/eval.py take it; the run's config keeps it for a resume."""
    moved = tmp_path / "moved.yaml"
    moved.write_text(tiny_data.read_text().replace(f"root: {tiny_data.parent}", "root: /nowhere/tiny"))
    with pytest.raises(FileNotFoundError, match="`root: /nowhere/tiny` \\(the dataset folder\\) is not a folder"):
        train(_tiny_cfg(tiny_data, tmp_path, data=str(moved), epochs=1, ema=False, name="noroot"))
    assert not (tmp_path / "runs/noroot").exists()
    run = train(_tiny_cfg(tiny_data, tmp_path, data=str(moved), root=str(tiny_data.parent), epochs=1, ema=False,
                          name="root"))
    assert _epochs_in_csv(run) == [1]
    assert yaml.safe_load((run / "config.yaml").read_text())["root"] == str(tiny_data.parent)


def test_a_run_resumes_from_another_folder(tiny_data, tmp_path, monkeypatch, caplog):
    """--data given relative to the folder the run started in: the run keeps it absolute, so that a resume
    started anywhere finds it (it said `data.yaml: no such data config`); the same --data given again with
    the resume is the run's own, not an option it ignores."""
    import yolo_attn.engine.trainer as trainer

    real_save = _stop_after_checkpoint(monkeypatch, 0)
    monkeypatch.chdir(tiny_data.parent)
    with pytest.raises(_Stop):
        train(_tiny_cfg(tiny_data, tmp_path, data=tiny_data.name, epochs=3, ema=False, name="moved"))
    last = tmp_path / "runs/moved/weights/last.pt"
    assert load_checkpoint(last)["config"]["data"] == str(tiny_data.resolve())
    _stop_after_checkpoint(monkeypatch, 1)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(_Stop):
        train(dict(load_train_config(None, {}), resume=str(last), workers=0))
    monkeypatch.setattr(trainer, "save_checkpoint", real_save)
    monkeypatch.chdir(tiny_data.parent)
    with caplog.at_level(logging.WARNING, logger="yolo_attn"):
        train(dict(load_train_config(None, {"data": tiny_data.name}), resume=str(last), workers=0))
    assert "ignored" not in caplog.text
    assert _epochs_in_csv(tmp_path / "runs/moved") == [1, 2, 3]


def test_a_train_split_that_cannot_teach_is_refused_before_the_run(tmp_path):
    """No label file found at all, no image, no class: each used to train its epochs and write weights that
    detect nothing (YOLOv5 refuses the first too)."""
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "empty").mkdir()
    for i in range(2):
        cv2.imwrite(str(root / "images" / f"{i}.jpg"), np.full((64, 64, 3), 90, np.uint8))
    config = tmp_path / "data.yaml"
    for train_entry, message in (("images", "not one box in the train split's 2 images"),
                                 ("empty", "the train split has no usable images")):
        config.write_text(f"format: yolo\nroot: {root}\ntrain: [{train_entry}]\nval: [images]\nnames: [a]\n")
        with pytest.raises(ValueError, match=message):
            train(_tiny_cfg(config, tmp_path, epochs=1, name="none"))
    # boxes, every one difficult: what stands in the way, and the way round it
    voc = root / "VOC2007"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (voc / sub).mkdir(parents=True)
    cv2.imwrite(str(voc / "JPEGImages" / "1.jpg"), np.full((64, 64, 3), 90, np.uint8))
    (voc / "Annotations" / "1.xml").write_text(
        "<annotation><size><width>64</width><height>64</height><depth>3</depth></size><object><name>a</name>"
        "<difficult>1</difficult><bndbox><xmin>5</xmin><ymin>5</ymin><xmax>40</xmax><ymax>40</ymax></bndbox>"
        "</object></annotation>")
    (voc / "ImageSets" / "Main" / "train.txt").write_text("1\n")
    config.write_text(f"format: voc\nroot: {root}\ntrain: [VOC2007/train]\nval: [VOC2007/train]\nnames: [a]\n")
    with pytest.raises(ValueError, match=r"all 1 boxes of the train split's 1 images are marked difficult, .*"
                                         r"set `train_difficult: true` in the data config"):
        train(_tiny_cfg(config, tmp_path, epochs=1, name="none"))
    coco = root / "coco"
    (coco / "annotations").mkdir(parents=True)
    (coco / "train2017").mkdir()
    cv2.imwrite(str(coco / "train2017" / "1.jpg"), np.full((64, 64, 3), 90, np.uint8))
    (coco / "annotations" / "instances_train2017.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "1.jpg", "height": 64, "width": 64}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [5, 5, 30, 30], "iscrowd": 1}],
        "categories": [{"id": 1, "name": "a"}]}))
    config.write_text(f"format: coco\nroot: {coco}\ntrain: train2017\nval: train2017\n")
    with pytest.raises(ValueError, match=r"all 1 boxes of the train split's 1 images are crowd regions"):
        train(_tiny_cfg(config, tmp_path, epochs=1, name="none"))
    assert not (tmp_path / "runs").exists()


def test_initial_weights_carry_the_class_channels_by_name(caplog):
    """A [person, car, dog] model fine-tuned on [dog, person] (or on [car, dog, person], same shape, another
    order) loaded its class channels by position: dog learned from person's. They now go by name; a class
    the weights do not know keeps its fresh start; names with nothing in common still load by position."""
    from yolo_attn.engine.trainer import _init_weights

    torch.manual_seed(0)
    source = build_model(0, 3)
    source_names = ["person", "car", "dog"]

    def row(state, head, nc, anchor, channel):
        """Weights and bias of one output channel of a head's prediction conv."""
        i = anchor * (5 + nc) + channel
        return torch.cat([state[f"{head}.pred.weight"][i].flatten(), state[f"{head}.pred.bias"][i:i + 1]])

    for names in (["dog", "person"], ["car", "dog", "person"], ["dog", "cat"]):
        model = build_model(0, len(names))
        init_head_biases(model, 128)
        fresh = {k: v.clone() for k, v in model.state_dict().items()}
        _init_weights(model, "src.pt", source, source_names, names)
        got, src = model.state_dict(), source.state_dict()
        for head in ("head_p5", "head_p4"):
            for anchor in range(3):
                for channel in range(5):  # box and objectness
                    assert torch.equal(row(got, head, len(names), anchor, channel), row(src, head, 3, anchor, channel))
                for k, name in enumerate(names):
                    want = (row(src, head, 3, anchor, 5 + source_names.index(name)) if name in source_names
                            else row(fresh, head, len(names), anchor, 5 + k))
                    assert torch.equal(row(got, head, len(names), anchor, 5 + k), want), (names, head, name)
        assert torch.equal(got["backbone.stem.0.conv.weight"], src["backbone.stem.0.conv.weight"])
    model = build_model(0, 3)
    with caplog.at_level(logging.WARNING, logger="yolo_attn"):
        _init_weights(model, "src.pt", source, source_names, ["a", "b", "c"])
    assert torch.equal(model.head_p5.pred.weight, source.head_p5.pred.weight)
    assert "share no name" in caplog.text


def test_a_kill_right_after_a_checkpoint_keeps_that_epochs_row(tiny_data, tmp_path, monkeypatch):
    import yolo_attn.engine.trainer as trainer

    real_save = _stop_after_checkpoint(monkeypatch, 1)
    with pytest.raises(_Stop):
        train(_tiny_cfg(tiny_data, tmp_path, epochs=3, time=None, ema=False, name="kill"))
    run = tmp_path / "runs/kill"
    assert load_checkpoint(run / "weights/last.pt")["epoch"] == 1
    assert _epochs_in_csv(run) == [1, 2]  # the resumed run starts at epoch 3: a missing row 2 would stay missing
    monkeypatch.setattr(trainer, "save_checkpoint", real_save)
    train(dict(load_train_config(None, {}), resume=str(run / "weights/last.pt"), workers=0))
    assert _epochs_in_csv(run) == [1, 2, 3]


def test_a_kill_between_the_two_checkpoints_of_a_best_epoch_keeps_best_pt_the_best(tiny_data, tmp_path, monkeypatch):
    """last.pt was written first and already held the new best fitness: killed before best.pt, the run went
    on with best.pt an older, worse epoch for good. Scores are scripted: 0.1, 0.2 (the kill), then the epoch
    trained again scores 0.15 and the last 0.12."""
    import yolo_attn.engine.trainer as trainer

    scores = iter([0.1, 0.2, 0.15, 0.12])
    monkeypatch.setattr(trainer, "fitness", lambda metrics: next(scores))
    real = trainer.save_checkpoint
    killed = []

    def save(state, path):  # killed after the first of the epoch's two checkpoint writes
        real(state, path)
        if state["epoch"] == 1 and not killed:
            killed.append(Path(path).name)
            raise _Stop

    monkeypatch.setattr(trainer, "save_checkpoint", save)
    with pytest.raises(_Stop):
        train(_cfg(tiny_data, tmp_path, img_size=64, amp=False, epochs=3, time=None, ema=False, name="kill"))
    run = tmp_path / "runs/kill"
    train(dict(load_train_config(None, {}), resume=str(run / "weights/last.pt"), workers=0))
    assert killed == ["best.pt"]
    best, last = load_checkpoint(run / "weights/best.pt"), load_checkpoint(run / "weights/last.pt")
    assert best["best_fitness"] == last["best_fitness"] == 0.2 and best["epoch"] == 1 and last["epoch"] == 2


def test_a_val_split_without_boxes_still_gives_a_best_pt(tmp_path):
    """mAP is NaN there, and NaN > best is never true: no best.pt was written."""
    from .conftest import write_tiny_dataset

    config = write_tiny_dataset(tmp_path / "bg")
    for label in (tmp_path / "bg" / "labels" / "val").glob("*.txt"):
        label.write_text("")
    run = train(_cfg(config, tmp_path, img_size=64, amp=False, epochs=2, time=None, ema=False))
    assert load_checkpoint(run / "weights/best.pt")["epoch"] == 1  # follows the latest


def test_a_time_budget_fits_a_run_asked_for_one_epoch(tiny_data, tmp_path, monkeypatch):
    """--epochs 1 --time 5 trained one epoch: the count was fitted only when the epoch was not the last."""
    _clocked(monkeypatch, lambda epoch: 60.0)
    run = train(_tiny_cfg(tiny_data, tmp_path, epochs=1, time=5, ema=False))
    assert _epochs_in_csv(run) == [1, 2, 3, 4, 5]


def test_numeric_looking_names_and_paths_stay_text(tiny_data, tmp_path):
    from yolo_attn.engine.config import parse_train_args

    cfg = parse_train_args(["--data", str(tiny_data), "--project", str(tmp_path / "123"), "--name", "2024",
                            "--weights", "null", "--classes", "yes", "--img-size", "64", "--batch-size", "4",
                            "--workers", "0", "--epochs", "1", "--eval-batch-size", "4", "--phi", "0",
                            "--amp", "false", "--ema", "false", "--lr", "1e-3"])
    assert cfg["name"] == "2024" and cfg["classes"] == "yes" and cfg["weights"] is None
    assert cfg["lr"] == 1e-3 and cfg["epochs"] == 1 and cfg["amp"] is False  # the others are still typed
    assert parse_train_args(["--name", "on", "--device", "0"])["name"] == "on"
    assert load_train_config(None, {"name": 2024, "project": 1.5})["name"] == "2024"  # YAML files, Python
    assert train(dict(cfg, classes=None)) == tmp_path / "123" / "2024"
    if not torch.cuda.is_available():  # --device 0 still names the first GPU
        with pytest.raises(ValueError, match="device '0': CUDA is not available"):
            resolve_device(parse_train_args(["--device", "0"])["device"])
    else:
        assert resolve_device("0") == torch.device("cuda", 0)


def test_a_config_file_is_read_as_a_user_writes_it(tmp_path):
    """YAML 1.1 reads 1e-3 as text (training then failed multiplying it) and `resume: false` as a boolean
    (which became the file name "False")."""
    config = tmp_path / "mine.yaml"
    config.write_text("lr: 1e-3\nweight_decay: 5e-4\naug:\n  mixup: 5e-2\nanchors: [[1e1, 14], [23, 27]]\n"
                      "weights: no\nresume: false\nname: 2024\n")
    cfg = load_train_config(str(config))
    assert (cfg["lr"], cfg["weight_decay"], cfg["aug"]["mixup"]) == (1e-3, 5e-4, 5e-2)
    assert cfg["anchors"] == [[10.0, 14], [23, 27]]
    assert cfg["weights"] is None and cfg["resume"] is None and cfg["name"] == "2024"
    config.write_text("name: yes\n")
    with pytest.raises(ValueError, match=r'name: YAML reads .* as booleans, not as text; quote it \(name: "yes"\)'):
        load_train_config(str(config))


@pytest.mark.parametrize("argv, message", [
    (["--lr", "fast"], "lr: 'fast' is not a number"),  # was a TypeError traceback in the optimizer
    (["--epochs", "abc"], "epochs: 'abc' is not a whole number"),
    (["--epochs"], "--epochs needs a value"),  # was True: one epoch
    (["--data"], "--data needs a value"),  # was a data config named "true"
    (["--epochs", "0"], "epochs: 0 must be at least 1"),  # was an empty run, exit 0
    (["--ema", "maybe"], "ema: 'maybe' is not true or false"),
    # were refused only after the dataset was cached (optimizer), or ran as asked (a negative lr)
    (["--lr", "-1"], "lr: -1 must be at least 0.0"),
    (["--close-mosaic", "-1"], "close_mosaic: -1 must be at least 0"),
    (["--momentum", "nan"], "momentum: nan must be from 0.0 to 1.0"),
    (["--optimizer", "adam"], "optimizer: 'adam' is not one of adamw, sgd"),
    (["--assigner", "yolox"], "assigner: 'yolox' is not one of multi, darknet"),
    (["--ema-tau", "0"], "ema_tau: 0 must be above 0"),  # a division by zero at the first EMA update
    (["--optimizer", "sgd", "--momentum", "0"], "momentum: 0 does not suit sgd"),  # Nesterov needs momentum
    (["--time", "abc"], "time: 'abc' is not a number of minutes above 0, auto or null"),  # a TypeError at epoch 1
    (["--time", "-5"], "time: -5 is not a number of minutes above 0"),
    (["--amp", "bogus"], "amp: 'bogus' is not auto, true or false"),  # trained in bf16
    # a negative translate failed at the first batch, leaving a run folder; the others ran, or failed in
    # albumentations' words, or as a traceback
    (["--aug.translate", "-0.3"], "augmentation option translate=-0.3 must be in [0, 1]"),
    (["--aug.hsv_h", "0.7"], "augmentation option hsv_h=0.7 must be in [0, 0.5]"),
    (["--aug.hsv_v", "-0.5"], "augmentation option hsv_v=-0.5 must be in [0, 1]"),
    (["--aug.min_size", "-1"], "augmentation option min_size=-1 must be at least 0"),
    (["--aug.scale", "1"], "augmentation option scale=1 must be in [0, 1)"),
    (["--aug.mosaic", "x"], "augmentation option mosaic='x' is not a number"),
    (["--aug", "5"], "aug: 5 is not a mapping of augmentation options"),
])
def test_a_flag_of_the_wrong_kind_is_one_line_naming_it(argv, message, capsys):
    from yolo_attn.engine.config import parse_train_args

    with pytest.raises(SystemExit):
        parse_train_args(argv)
    assert message in capsys.readouterr().err
    assert parse_train_args(["--compile", "--phi", "cbam"])["compile"] is True  # a bare switch; phi by name


def test_an_input_size_that_is_not_a_multiple_of_32_stops_training_before_it_starts(tiny_data, tmp_path):
    """--img-size 400 used to cache the whole dataset and fail in the first forward, deep in the neck."""
    with pytest.raises(ValueError, match=r"img_size 400: .* multiples of 32 \(e.g. 416\)"):
        train(_cfg(tiny_data, tmp_path, img_size=400))
    with pytest.raises(ValueError, match=r"eval_img_size 100: .* \(e.g. 128\)"):
        train(_cfg(tiny_data, tmp_path, eval_img_size=100))
    with pytest.raises(ValueError, match=r"img_size 32: training needs at least 64"):
        train(_cfg(tiny_data, tmp_path, img_size=32))
    assert not (tmp_path / "runs").exists()


def test_warmup_epochs_0_turns_warm_up_off(tiny_data, tmp_path):
    run = train(_tiny_cfg(tiny_data, tmp_path, epochs=1, warmup_epochs=0, ema=False, time=None))
    assert load_checkpoint(run / "weights/last.pt")["scheduler"]["warmup_iters"] == 0
    from yolo_attn.engine.trainer import _warmup_iters

    assert _warmup_iters(0, 500) == 0
    assert _warmup_iters(0.5, 8) == 8 and _warmup_iters(0.1, 500) == 100  # at least 100 iterations or an epoch
    assert _warmup_iters(3, 500) == 1500


def test_the_fitted_epoch_count_is_broadcast_from_the_training_device(monkeypatch):
    """NCCL broadcasts only GPU tensors: the count goes out on the device the run trains on."""
    import torch.distributed as dist

    sent = []

    def broadcast(tensor, src):
        sent.append(tensor.device)
        tensor.fill_(7)  # what rank 0 sends

    monkeypatch.setattr(dist, "broadcast", broadcast)
    devices = [torch.device("cpu")] + ([torch.device("cuda", 0)] if torch.cuda.is_available() else [])
    for device in devices:
        assert _fit_epochs_to_time(28, 400, [400], 2, device) == 7
    assert sent == devices


def test_resuming_a_run_whose_network_has_changed_says_how_to_go_on(tiny_data, tmp_path):
    """A phi 5 run started before the GC block's last conv had a bias: its optimizer state has one parameter
    fewer per block. torch's bare "parameter group that doesn't match" became an error naming the file and
    the way on (--weights), which then trains."""
    run = train(_tiny_cfg(tiny_data, tmp_path, phi=5, epochs=1, ema=False, time=None))
    ckpt = load_checkpoint(run / "weights/last.pt")
    ckpt["epochs"] = 2  # one epoch left to resume
    model = load_model(run / "weights/last.pt")[0]
    names = {id(p): n for n, p in model.named_parameters()}
    order = [names[id(p)] for g in build_optimizer(model, "adamw", 1e-3, 0.9, 5e-4).param_groups for p in g["params"]]
    new = {i for i, n in enumerate(order) if n.endswith("transform.3.bias")}
    assert len(new) == 3  # the GC blocks of attn_p4, attn_p5 and attn_up
    for group in ckpt["optimizer"]["param_groups"]:  # as the optimizer of the older network saved it
        group["params"] = [i for i in group["params"] if i not in new]
    ckpt["optimizer"]["state"] = {i: s for i, s in ckpt["optimizer"]["state"].items() if i not in new}
    ckpt["model"] = {k: v for k, v in ckpt["model"].items() if not k.endswith("transform.3.bias")}
    old = run / "weights/last.pt"  # the old run's own last.pt
    torch.save(ckpt, old)
    with pytest.raises(ValueError, match=rf"{old}: its optimizer state does not fit.*--weights {old}$"):
        train(load_train_config(None, {"resume": str(old)}))
    fine_tuned = train(_tiny_cfg(tiny_data, tmp_path, phi=5, epochs=1, ema=False, time=None, weights=str(old),
                                 name="on"))
    assert load_checkpoint(fine_tuned / "weights/last.pt")["epoch"] == 0


def test_a_channel_gate_that_does_not_vary_is_reported(tiny_data, tmp_path, monkeypatch, caplog):
    """Every phi 2 run on the embedded dataset ended with CBAM's channel MLP off (gate 0.5 everywhere):
    a user comparing attention blocks is told, not left to find it."""
    from yolo_attn.engine import trainer

    dataset = build_dataset(load_data_config(str(tiny_data)), "val")
    model = build_model(2, 2)
    with caplog.at_level("WARNING", logger="yolo_attn.train"):
        trainer._warn_constant_gates(model, dataset, 64, torch.device("cpu"))
        assert caplog.text == ""  # gates vary at init
        with torch.no_grad():
            for block in (model.attn_p4, model.attn_p5, model.attn_up):
                block.channel.fc2.weight.zero_()
        trainer._warn_constant_gates(model, dataset, 64, torch.device("cpu"))
    assert ("cbam attention in attn_p4, attn_p5, attn_up: the channel gate is 0.500 on every channel of "
            f"{len(dataset)} val images") in caplog.text
    assert "CBAM's spatial gate still acts" in caplog.text
    caplog.clear()
    # train() runs the check on the model it saved as EMA
    monkeypatch.setattr(trainer, "constant_channel_gates", lambda model, images: {"attn_p5": 0.5})
    with caplog.at_level("WARNING", logger="yolo_attn.train"):
        train(_tiny_cfg(tiny_data, tmp_path, phi=1, epochs=1, time=None))
    assert "se attention in attn_p5: the channel gate is 0.500" in caplog.text


def test_patience_stops_a_run_whose_best_is_that_many_epochs_old_and_resume_keeps_the_count(
        tiny_data, tmp_path, monkeypatch, caplog):
    """Fitness by epoch 0.1, 0.3, 0.2, 0.25, 0.28, 0.9: with patience 3 the run stops after epoch 5 (index 4),
    three epochs after its best (index 1), also when it was killed and resumed in between."""
    import yolo_attn.engine.trainer as trainer

    scores = [0.1, 0.3, 0.2, 0.25, 0.28, 0.9]
    trained = []
    real_epoch = trainer.train_one_epoch

    def one_epoch(*args, **kw):
        trained.append(args[7])
        return real_epoch(*args, **kw)

    monkeypatch.setattr(trainer, "train_one_epoch", one_epoch)
    monkeypatch.setattr(trainer, "fitness", lambda metrics: scores[trained[-1]])
    real_save = _stop_after_checkpoint(monkeypatch, 2)
    cfg = _cfg(tiny_data, tmp_path, img_size=64, amp=False, epochs=6, ema=False, patience=3, name="patient")
    with pytest.raises(_Stop):
        train(cfg)
    monkeypatch.setattr(trainer, "save_checkpoint", real_save)
    run = tmp_path / "runs/patient"
    with caplog.at_level(logging.INFO, logger="yolo_attn"):
        train(dict(load_train_config(None, {}), resume=str(run / "weights/last.pt"), workers=0))
    assert trained == [0, 1, 2, 3, 4]
    assert "stopping early: no better fitness in the 3 epochs since epoch 2 (patience 3)" in caplog.text
    assert _epochs_in_csv(run) == [1, 2, 3, 4, 5]
    last = load_checkpoint(run / "weights/last.pt")
    assert (last["epoch"], last["epochs"], last["best_epoch"]) == (4, 5, 1)
    assert load_checkpoint(run / "weights/best.pt")["epoch"] == 1
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="yolo_attn"):  # finished: a resume has nothing left to do
        train(dict(load_train_config(None, {}), resume=str(run / "weights/last.pt"), workers=0))
    assert "already finished all 5 epochs" in caplog.text and trained == [0, 1, 2, 3, 4]

    trained.clear()  # patience 0: every epoch
    train(_cfg(tiny_data, tmp_path, img_size=64, amp=False, epochs=6, ema=False, patience=0, name="impatient"))
    assert trained == [0, 1, 2, 3, 4, 5]


def test_save_period_keeps_resumable_weights_of_every_nth_epoch(tiny_data, tmp_path):
    run = train(_tiny_cfg(tiny_data, tmp_path, epochs=3, save_period=2, ema=False, name="periodic"))
    assert sorted(p.name for p in (run / "weights").iterdir()) == ["best.pt", "epoch2.pt", "last.pt"]
    kept = load_checkpoint(run / "weights/epoch2.pt")
    assert kept["epoch"] == 1 and "optimizer" in kept


def test_a_resumed_schedule_keeps_its_place_in_epochs_when_an_epoch_has_other_batches():
    """Started as 2 DDP processes (8 batches an epoch), resumed as one (16): the cosine once ran out after 3 of
    4 epochs, the last epoch at the floor (and the other way round it never reached it)."""
    from yolo_attn.engine.trainer import _schedule_in_epochs

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    before = WarmupCosine(optimizer, total_iters=4 * 8, warmup_iters=4)
    for _ in range(2 * 8):
        before.step()
    after = WarmupCosine(optimizer, total_iters=4 * 16, warmup_iters=8)
    after.load_state_dict(before.state_dict())
    _schedule_in_epochs(after, 2, 16, 4)
    assert (after.iteration, after.total_iters, after.warmup_iters) == (32, 64, 8)
    assert after.lr_factor(after.iteration) == pytest.approx(before.lr_factor(before.iteration))
    lrs = []
    for _ in range(2 * 16):
        after.step()
        lrs.append(optimizer.param_groups[0]["lr"])
    assert lrs[-1] == pytest.approx(after.lr_factor(63)) and lrs[-1] > 0.05 and lrs[-2] > lrs[-1]
    same = WarmupCosine(optimizer, total_iters=4 * 8, warmup_iters=4)
    same.load_state_dict(before.state_dict())
    _schedule_in_epochs(same, 2, 8, 4)  # the same batches an epoch: untouched
    assert same.state_dict() == before.state_dict()


def test_ctrl_c_says_what_is_kept_and_a_run_stopped_in_its_first_epoch_leaves_no_folder(
        tiny_data, tmp_path, monkeypatch, capsys):
    """Ctrl-C said "the last completed epoch is in weights/last.pt" even in the first epoch, when weights/ was
    empty, and the empty run kept its name (the next run became exp2)."""
    import yolo_attn.engine.trainer as trainer

    real = trainer.train_one_epoch
    stop_at = {"epoch": 0}

    def one_epoch(*args, **kw):
        if args[7] == stop_at["epoch"]:
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(trainer, "train_one_epoch", one_epoch)
    with pytest.raises(KeyboardInterrupt, match="in the first epoch, before any weights were saved; .* removed"):
        train(_tiny_cfg(tiny_data, tmp_path, epochs=3, ema=False, name="ctrlc"))
    assert not (tmp_path / "runs" / "ctrlc").exists()

    stop_at["epoch"] = 1
    with pytest.raises(KeyboardInterrupt) as info:
        train(_tiny_cfg(tiny_data, tmp_path, epochs=3, ema=False, name="ctrlc"))
    last = tmp_path / "runs" / "ctrlc" / "weights" / "last.pt"
    assert str(info.value) == f"epoch 1, the last completed, is in {last}: resume with --resume {last}"

    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import train as tool
    finally:
        sys.path.remove(str(ROOT / "tools"))
    monkeypatch.setattr(tool, "train", lambda cfg: (_ for _ in ()).throw(KeyboardInterrupt("epoch 1 ...")))
    assert tool.main([]) == 130
    assert capsys.readouterr().err.strip().endswith("interrupted: epoch 1 ...")
    monkeypatch.setenv("RANK", "1")  # under DDP only the main process says it
    assert tool.main([]) == 130 and "interrupted" not in capsys.readouterr().err


def test_exist_ok_trains_into_the_named_folder_and_starts_its_results_afresh(tiny_data, tmp_path, caplog):
    """--exist-ok: a second run of the same name writes into its folder, not same2; results.csv holds that run's
    epoch alone (appended to, it would go on after the first run's), and the first run's weights are replaced;
    its --save-period snapshot and a file of the user's there stay."""
    first = train(_tiny_cfg(tiny_data, tmp_path, epochs=1, save_period=1, ema=False, name="same", exist_ok=True))
    (first / "weights" / "epoch1.pt").rename(first / "weights" / "epoch7.pt")  # as a longer first run's
    assert first == tmp_path / "runs" / "same"  # made when missing
    (first / "notes.txt").write_text("mine")
    with caplog.at_level(logging.INFO):
        again = train(_tiny_cfg(tiny_data, tmp_path, epochs=1, ema=False, name="same", exist_ok=True))
    assert again == first and [p.name for p in (tmp_path / "runs").iterdir()] == ["same"]
    assert f"{again} exists: this run writes into it (exist_ok)" in caplog.text
    assert _epochs_in_csv(again) == [1]
    assert sorted(p.name for p in (again / "weights").iterdir()) == ["best.pt", "epoch7.pt", "last.pt"]
    for name in ("last.pt", "best.pt"):  # the second run's
        assert load_checkpoint(again / "weights" / name)["config"]["save_period"] == 0, name
    assert (again / "notes.txt").read_text() == "mine"


def test_a_run_in_a_reused_folder_never_takes_the_earlier_runs_weights_for_its_own(tiny_data, tmp_path, monkeypatch):
    """Before its first checkpoint, Ctrl-C names no earlier last.pt to resume and leaves the folder; that
    checkpoint takes away the earlier best.pt it does not replace, which a resume would read as this run's best."""
    import yolo_attn.engine.trainer as trainer

    cfg = _tiny_cfg(tiny_data, tmp_path, epochs=2, ema=False, name="same", exist_ok=True)
    run = train(dict(cfg, epochs=1))
    real = trainer.train_one_epoch
    monkeypatch.setattr(trainer, "train_one_epoch", lambda *a, **kw: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt) as info:
        train(cfg)
    assert str(info.value) == f"before any weights were saved in {run / 'weights'} (those there are an earlier run's)"
    assert sorted(p.name for p in (run / "weights").iterdir()) == ["best.pt", "last.pt"]  # kept, as the folder

    monkeypatch.setattr(trainer, "train_one_epoch", real)
    _stop_after_checkpoint(monkeypatch, 0)
    with pytest.raises(_Stop):  # epoch 1 of 2 is not evaluated: no best.pt of its own yet
        train(cfg)
    assert sorted(p.name for p in (run / "weights").iterdir()) == ["last.pt"] and _epochs_in_csv(run) == [1]
    assert load_checkpoint(run / "weights/last.pt")["epochs"] == 2  # this run's


def test_exist_ok_with_a_file_at_the_run_folder_names_it(tiny_data, tmp_path):
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "same").write_text("a file")
    with pytest.raises(NotADirectoryError, match=f"{tmp_path / 'runs' / 'same'}: a file stands where the results "
                                                 f"folder goes"):
        train(_tiny_cfg(tiny_data, tmp_path, epochs=1, ema=False, name="same", exist_ok=True))
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["same"]


def test_single_cls_trains_every_box_as_one_class_and_eval_scores_it_so(tiny_data, tmp_path):
    from yolo_attn.eval.run import run_eval

    run = train(_tiny_cfg(tiny_data, tmp_path, epochs=1, ema=False, single_cls=True, name="one"))
    model, meta = load_model(run / "weights/last.pt")
    assert meta["names"] == ["item"] and model.num_classes == 1
    val_boxes = sum(len((p.read_text()).split("\n")) - 1 for p in (tiny_data.parent / "labels/val").iterdir())
    with pytest.raises(ValueError, match="one class \\(item\\) and the data 2: a model trained with --single-cls"):
        run_eval(run / "weights/last.pt", tiny_data, img_size=64, workers=0, project=tmp_path / "eval")
    result = run_eval(run / "weights/last.pt", tiny_data, img_size=64, workers=0, project=tmp_path / "eval",
                      single_cls=True)
    assert [(c["class"], c["ground_truths"]) for c in result["classes"]] == [("item", val_boxes)]


def test_checkpoint_state_goes_to_the_cpu_whole_and_loads_back():
    """Saved EMA and optimizer state are CPU tensors (a GPU run's best.pt loads with a plain torch.load on a
    machine without one), in the same structure, which the optimizer loads back."""
    from yolo_attn.engine.trainer import _to_cpu

    model = build_model(0, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.rand(1, 3, 64, 64))[0].sum().backward()
    optimizer.step()
    state = optimizer.state_dict()
    moved = _to_cpu(state)
    assert moved["param_groups"] == state["param_groups"] and moved["state"].keys() == state["state"].keys()
    for key, value in state["state"][0].items():
        assert torch.equal(moved["state"][0][key], value) and moved["state"][0][key].device.type == "cpu"
    again = torch.optim.AdamW(model.parameters(), lr=1e-3)
    again.load_state_dict(moved)
    assert torch.equal(again.state_dict()["state"][0]["exp_avg"], state["state"][0]["exp_avg"])


def test_help_lists_every_option_with_its_default(capsys):
    from yolo_attn.engine.config import _defaults, parse_train_args

    with pytest.raises(SystemExit):
        parse_train_args(["--help"])
    text = capsys.readouterr().out
    for key, value in _defaults().items():
        assert f"\n  {key}:" in text, key
    assert "  patience: 100 " in text and "# stop when the best fitness" in text  # defaults and what they do
