"""What this machine can run fast, detected at run time, and the automatic choice of backend and precision.

Why the choice depends on the CPU (measured with ``tools/benchmark.py``, YOLOv4-tiny at 416, batch 1):

- AMX tiles (Sapphire Rapids and later, when the OS and hypervisor expose them) make bf16 several times
  faster than fp32: bf16 is the fast float path there.
- AVX512-BF16 without AMX (``vdpbf16ps`` only) differs by CPU: on an Intel Xeon whose VM hides AMX, bf16 ran
  *slower* than fp32 (87.5 vs 42.4 ms); on an AMD EPYC (Zen 4) it ran 1.8x *faster* (11.3 vs 20.4 ms, and a
  training step 2.0x). The flags cannot tell the two apart, so on such a CPU a probe of a few convolutions
  (``bf16_speedup``, about 0.2 s, once per process) decides.
- An OpenVINO int8 export is the fastest path on every CPU measured: with VNNI (AVX512-VNNI / AVX-VNNI) about
  3.7x the torch fp32 path, and still 2.2x on an AVX2-only AMD EPYC (36 vs 79 ms). int8 needs a calibrated
  export (``tools/export.py --precision int8``), which the automatic choice uses when it sits beside the
  checkpoint.
- Short of int8, an OpenVINO float export beside the checkpoint beats torch's fused channels-last fp32 by
  about 1.3x (Xeon 32.5 vs 42.4 ms, AMD 59 vs 79 ms); it runs bf16 where bf16 is fast. Converting on every
  load would cost seconds, so only an export already written is used.
- On CUDA, fp16.

Memory: glibc's malloc gives every buffer above its mmap threshold (at most 32 MiB however it adapts) pages of
its own and returns them on free, so each step faults its large activations in again. ``keep_freed_memory``
raises the threshold once per process. On an AMD EPYC (Zen 4), each in a process of its own: a bf16 training
step at 416, batch 8 took 14-16 % less time, a bf16 forward at batch 8 26-31 % less, page faults per step down
from thousands to hundreds; in ``tools/benchmark.py``'s interleaved runs fp32 at batch 8 ran 1.4-1.6x faster,
bf16 1.07x.
"""
from __future__ import annotations

import copy
import ctypes
import ctypes.util
import hashlib
import importlib.util
import json
import os
import platform
import time
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

import torch

__all__ = ["AutoChoice", "BF16_MIN_SPEEDUP", "CpuFeatures", "auto_choice", "bf16_reason", "bf16_speedup",
           "cpu_features", "export_for", "fixed_input_size", "keep_freed_memory", "torch_threads",
           "weights_fingerprint"]


@dataclass(frozen=True)
class CpuFeatures:
    """The instruction-set features that decide which precision is fast."""

    avx512: bool = False
    avx512_bf16: bool = False
    amx_bf16: bool = False  # AMX tiles usable (CPUID, and the kernel grants the tile state)
    amx_int8: bool = False
    vnni: bool = False  # AVX512-VNNI or AVX-VNNI: int8 dot products
    bf16_faster: Optional[bool] = None  # AVX512-BF16 without AMX: measured by bf16_speedup() when None

    @property
    def fast_bf16(self) -> bool:
        """bf16 is the fast float path: always with AMX, never without bf16 instructions, and with AVX512-BF16
        alone where the probe measured it faster than fp32."""
        if self.amx_bf16:
            return True
        if not self.avx512_bf16:
            return False
        return self.bf16_faster if self.bf16_faster is not None else bf16_speedup() >= BF16_MIN_SPEEDUP

    def summary(self) -> str:
        names = [n for n in ("amx_bf16", "amx_int8", "avx512_bf16", "vnni", "avx512") if getattr(self, n)]
        return ", ".join(names) or "no AVX-512"


def _cpuinfo_flags(path: str = "/proc/cpuinfo") -> set:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:  # not Linux
        pass
    return set()


def _torch_check(name: str) -> Optional[bool]:
    """torch's own CPUID checks (private API, so tolerate their absence)."""
    fn = getattr(torch.cpu, name, None)
    try:
        return bool(fn()) if fn is not None else None
    except Exception:  # a check that cannot run says nothing
        return None


@lru_cache(maxsize=1)
def cpu_features() -> CpuFeatures:
    """Detect the CPU's features once: torch's CPUID checks where it has them, else /proc/cpuinfo flags.

    AMX counts only when torch can enable the tile state (Linux must grant it per process); a CPU whose
    flags list AMX but whose kernel refuses it runs bf16 without AMX.
    """
    flags = _cpuinfo_flags()

    def has(torch_name: str, *flag_names: str) -> bool:
        found = _torch_check(torch_name)
        return found if found is not None else any(f in flags for f in flag_names)

    amx = has("_is_amx_tile_supported", "amx_tile")
    if amx:
        init = getattr(torch._C._cpu, "_init_amx", None)
        amx = bool(init()) if init is not None else True
    return CpuFeatures(
        avx512=has("_is_avx512_supported", "avx512f"),
        avx512_bf16=has("_is_avx512_bf16_supported", "avx512_bf16"),
        amx_bf16=amx and ("amx_bf16" in flags or not flags),
        amx_int8=amx and ("amx_int8" in flags or not flags),
        vnni=has("_is_vnni_supported", "avx512_vnni", "avx_vnni"),
    )


BF16_MIN_SPEEDUP = 1.25  # a near tie stays on exact fp32
# A ratio in this band may be a busy neighbour, not the CPU, so the probe goes on measuring. On a 2-core Zen 4
# whose bf16 runs 1.9x fp32, beside a 2-thread matmul: five rounds on 2 threads measured 1.0x and 0.92x in 2
# probes of 5 (and so picked fp32); one thread and up to 1.5 s of rounds, 1.84-2.0x in 10 of 10.
_UNSETTLED = (0.8, 1.6)


@lru_cache(maxsize=1)
def bf16_speedup() -> float:
    """How many times faster bf16 convolutions run than fp32 ones here. Times 3x3 convolutions shaped like
    YOLOv4-tiny's (64 channels at 104x104, 128 at 52x52, 256 at 26x26; channels-last, no grad), interleaved,
    and compares each layer's best time over the rounds, which a busy neighbour can slow down but not speed
    up. On one thread, about 0.2 s, once per process; up to 1.5 s when the cores are busy (``_settled_ratio``)."""

    def convs(dtype: torch.dtype) -> list:
        shapes = ((64, 104), (128, 52), (256, 26))
        cl = torch.channels_last
        return [(torch.nn.Conv2d(c, c, 3, padding=1, bias=False).eval().to(dtype=dtype, memory_format=cl),
                 torch.randn(1, c, side, side, dtype=dtype).contiguous(memory_format=cl)) for c, side in shapes]

    fp32, bf16 = convs(torch.float32), convs(torch.bfloat16)

    def timed(layers: list) -> list:
        times = []
        for conv, x in layers:
            start = time.perf_counter()
            conv(x)
            times.append(time.perf_counter() - start)
        return times

    # one thread: the ratio is the core's, and a pool's barrier would wait on a core a neighbour holds
    with torch.no_grad(), torch_threads(1):
        timed(fp32), timed(bf16)  # warm-up: oneDNN builds its kernels
        return _settled_ratio(lambda: (timed(fp32), timed(bf16)))


def _settled_ratio(time_round: Callable[[], Tuple[list, list]], min_rounds: int = 5, max_rounds: int = 40,
                   budget_s: float = 1.5, clock: Callable[[], float] = time.perf_counter) -> float:
    """fp32 time over bf16 time, each the sum of its layers' best times over rounds of ``time_round`` (which
    gives both dtypes' per-layer seconds, interleaved). After ``min_rounds`` it stops once the ratio is
    clearly one side of the threshold (outside ``_UNSETTLED``), else at ``max_rounds`` or ``budget_s``: on
    busy cores more rounds give each layer a quiet moment, where a fixed five once flipped the choice."""
    best_fp32 = best_bf16 = None
    start = clock()
    for round_ in range(1, max_rounds + 1):
        fp32, bf16 = time_round()
        best_fp32 = fp32 if best_fp32 is None else [min(a, b) for a, b in zip(best_fp32, fp32)]
        best_bf16 = bf16 if best_bf16 is None else [min(a, b) for a, b in zip(best_bf16, bf16)]
        ratio = sum(best_fp32) / sum(best_bf16)
        if round_ >= min_rounds and (not _UNSETTLED[0] <= ratio <= _UNSETTLED[1] or clock() - start > budget_s):
            break
    return ratio


@dataclass(frozen=True)
class AutoChoice:
    """What the automatic choice picked, and why (for the log line)."""

    backend: str
    precision: str
    reason: str
    weights: Optional[Path] = None  # a faster export of the same checkpoint, when one was found

    def describe(self) -> str:
        source = f" from {self.weights}" if self.weights is not None else ""
        return f"auto: {self.backend} {self.precision}{source} ({self.reason})"


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def weights_fingerprint(weights: Path) -> str:
    """A digest of a weights file's content, recorded in its exports (``weights_source``). For a zip checkpoint
    (``torch.save``) it hashes the CRC-32 of every member from the archive's index, which takes milliseconds
    at any size; other files (Darknet .weights, legacy .pth) are hashed whole. Content, not file times: a run
    folder copied elsewhere keeps its export, another checkpoint copied over one does not."""
    digest = hashlib.sha256()
    try:
        with zipfile.ZipFile(weights) as archive:
            for info in archive.infolist():
                digest.update(f"{info.filename}:{info.CRC}:{info.file_size};".encode())
    except zipfile.BadZipFile:
        with open(weights, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def export_for(weights: Path, precision: str) -> Optional[Path]:
    """The OpenVINO export of ``weights`` in ``precision`` that ``tools/export.py`` writes beside it
    (``best_openvino/best.xml``, ``best_openvino_int8/best.xml``, ...), when it exists and was made from
    these weights (its recorded ``weights_source``; exports made before that was recorded: not older than the
    checkpoint), so that stale weights never run. An IR OpenVINO cannot read is passed over too."""
    from .export import default_output  # here: export.py imports backends.py, which imports this module

    candidate = default_output(weights, "openvino", precision)
    if not (candidate.is_file() and candidate.with_suffix(".bin").is_file()):
        return None
    try:
        recorded = _export_meta(candidate).get("weights_source")
    except Exception:  # OpenVINO's own errors: a torn or foreign IR is not one to pick
        return None
    if recorded is not None:
        return candidate if recorded == weights_fingerprint(weights) else None
    return candidate if candidate.stat().st_mtime >= weights.stat().st_mtime else None


def _stale_note(weights: Path, precision: str) -> str:
    """For the log line: the export of ``precision`` beside ``weights`` that export_for passed over (made from
    other weights, older than them, or unreadable); empty where there is none."""
    from .export import default_output  # here: export.py imports backends.py, which imports this module

    candidate = default_output(weights, "openvino", precision)
    if not candidate.is_file():
        return ""
    flags = {"fp32": "", "bf16": " --precision bf16", "int8": " --precision int8 --data CONFIG"}[precision]
    return (f"; {candidate} is passed over: it is not an export of these weights (made from other or older "
            f"weights, or unreadable): re-export it (tools/export.py --weights {weights} --format openvino{flags}) "
            f"to use it")


def _export_meta(xml: Path) -> Dict[str, Any]:
    """The yolo_attn meta an OpenVINO IR carries (graph only; nothing is compiled)."""
    return copy.deepcopy(_ir_facts(xml)[0])  # the cached one stays as read


def fixed_input_size(xml: Path) -> Optional[Tuple[int, int]]:
    """(height, width) an OpenVINO IR's image input is fixed to, or None where it takes any size (an
    export made with --dynamic). Reads the graph only; nothing is compiled."""
    return _ir_facts(xml)[1]


def _ir_facts(xml: Path) -> Tuple[Dict[str, Any], Optional[Tuple[int, int]]]:
    """An IR's meta and fixed input size, from one read of its graph (about 8 ms) per version of its files:
    choosing a backend asks for both, for several precisions, and again at the checkpoint's size. A version is
    both files' inode, size and times, ctime included (which no copy or touch keeps): an export replaced by one
    of the same size with its times kept is read again. The .bin counts too: reading the graph checks it
    against the .xml (a torn pair fails)."""
    xml = Path(xml).resolve()
    stamps = tuple((s.st_dev, s.st_ino, s.st_size, s.st_mtime_ns, s.st_ctime_ns)
                   for s in (xml.stat(), xml.with_suffix(".bin").stat()))
    return _read_ir_facts(str(xml), stamps)


@lru_cache(maxsize=32)
def _read_ir_facts(xml: str, stamps: Tuple[Tuple[int, ...], ...]) -> Tuple[Dict[str, Any], Optional[Tuple[int, int]]]:
    from .backends import _fixed_shape, _openvino_core, _ov_rt_info  # here: backends.py imports this module

    # the process's one Core: a second one is what crashed the process (see backends._openvino_core)
    model = _openvino_core().read_model(xml)
    text = _ov_rt_info(model)
    _, h, w = _fixed_shape(list(model.inputs[0].get_partial_shape()))
    return (json.loads(text) if text else {}), ((h, w) if h is not None and w is not None else None)


def auto_choice(
    device: str = "cpu",
    weights: Optional[Path] = None,
    needs_torch: bool = False,
    input_shape: Optional[Tuple[int, int]] = None,
    any_size: bool = False,
    features: Optional[CpuFeatures] = None,
    installed: Callable[[str], bool] = _installed,
    convert: bool = False,
) -> AutoChoice:
    """The fastest way to run PyTorch weights on ``device``.

    Args:
        weights: the checkpoint; an OpenVINO export beside it (calibrated int8 first, then float) is used when
            there is one.
        needs_torch: the caller needs the PyTorch module (attention view): stay on the torch backend.
        input_shape: the (height, width) the caller will run; an export fixed to another size is passed over
            (None: the export's own size will be used).
        any_size: the caller runs several sizes (test-time augmentation): every fixed-size export is passed over.
        features: the CPU's features (detected when None; tests pass their own).
        installed: whether a module is importable (tests pass their own).
        convert: the caller runs enough images to repay converting the weights to OpenVINO in memory (about
            2 s once): with AMX and no export found, OpenVINO bf16 then runs them.
    """
    if device.startswith("cuda"):
        return AutoChoice("torch", "fp16", "CUDA: fp16 channels-last")
    features = features or cpu_features()
    unfit = ""  # an export beside the weights that cannot run at input_shape, for the log line
    if weights is not None and not needs_torch and installed("openvino"):
        weights = Path(weights)
        for precision in ("int8", "fp32", "bf16"):
            export = export_for(weights, precision)
            if export is None:
                unfit = unfit or _stale_note(weights, precision)
                continue
            fixed = fixed_input_size(export) if input_shape is not None or any_size else None
            if fixed is not None and (any_size or fixed != tuple(input_shape)):
                wanted = ("test-time augmentation runs several sizes" if any_size
                          else f"not {input_shape[1]}x{input_shape[0]}")
                unfit = unfit or (f"; {export} is fixed to {fixed[1]}x{fixed[0]}, {wanted}: re-export it with "
                                  f"--dynamic to use it at other sizes")
                continue
            if precision == "int8":
                why = "VNNI int8" if features.vnni else "int8 (no VNNI, still about 2x fp32)"
                return AutoChoice("openvino", "int8", f"{why}, the fastest path on this CPU", export)
            return AutoChoice("openvino", "bf16" if features.fast_bf16 else "fp32",
                              "the float export of this checkpoint, about 1.3x torch; an int8 export runs 2-4x "
                              "(tools/export.py --precision int8 --data CONFIG)", export)
    if (convert and features.amx_bf16 and device.split(":")[0] == "cpu" and not needs_torch and not any_size
            and installed("openvino") and installed("onnx")):
        # with AMX, OpenVINO bf16 took a 720p frame to boxes in 6.5 ms against 14.3 for torch bf16 (the README's
        # Speed section). The CPUs without AMX there saved 1.4-15.5 ms a frame (5-19 %); the conversion's cost
        # was not measured on them, so they stay on torch.
        return AutoChoice("openvino", "bf16", "AMX: OpenVINO bf16 runs about 2x torch bf16; converted in memory "
                          "for this long run, about 2 s once; an int8 export runs faster still (tools/export.py "
                          "--format openvino --precision int8 --data CONFIG)" + unfit)
    if features.fast_bf16:
        return AutoChoice("torch", "bf16", f"{bf16_reason(features)}: bf16 is the fast float path" + unfit)
    why = bf16_reason(features)
    why += unfit or ("; an int8 export runs 2-4x faster "
                     "(tools/export.py --format openvino --precision int8 --data CONFIG)")
    return AutoChoice("torch", "fp32", why)


def bf16_reason(features: CpuFeatures) -> str:
    """Why bf16 is or is not the fast float path here, for log lines: the flags, or what the probe measured."""
    if features.amx_bf16:
        return "AMX"
    if not features.avx512_bf16:
        return "no bf16 support"
    if features.bf16_faster is not None:
        return "AVX512-BF16 without AMX, bf16 " + ("faster" if features.bf16_faster else "slower") + " than fp32"
    return f"AVX512-BF16 without AMX, bf16 measured {bf16_speedup():.2f}x fp32"


MALLOC_ENV = "YOLO_ATTN_MALLOC"  # 0 leaves glibc's malloc as it is
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters, from glibc's <malloc.h>
_USER_MALLOC_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")


@lru_cache(maxsize=1)
def keep_freed_memory() -> bool:
    """Let glibc's malloc keep large freed buffers for the next step instead of unmapping them (mmap
    threshold 1 GiB, trim threshold 2 GiB). The peak memory of a step is unchanged; what a step frees stays
    in the process for the next one. Once per process; returns whether it was applied.

    Left alone where malloc is not glibc's, where ``YOLO_ATTN_MALLOC=0``, and where the user already chose
    (``MALLOC_*_`` variables, ``GLIBC_TUNABLES``, an ``LD_PRELOAD``-ed allocator such as jemalloc).
    """
    if os.environ.get(MALLOC_ENV, "1") == "0" or any(os.environ.get(k) for k in _USER_MALLOC_SETTINGS):
        return False
    if "malloc" in os.environ.get("LD_PRELOAD", ""):  # jemalloc, tcmalloc, mimalloc
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # both: with the mmap threshold alone glibc would trim the heap back (above 128 KiB free) at every free
    return bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)) and bool(mallopt(_M_MMAP_THRESHOLD, 2**30))


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run the block with torch's intra-op pool at ``count`` threads: around an OpenVINO or ONNX Runtime call
    torch's idle OpenMP workers would otherwise spin on the cores the other library's pool needs."""
    previous = torch.get_num_threads()
    if previous == count:
        yield
        return
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)

