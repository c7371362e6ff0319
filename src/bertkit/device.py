"""Which device runs the model, in which precision, on how many threads, and how batches get there.

CPU and CUDA run the same code. On CUDA, fp32 matrix multiplies use TF32 tensor cores (10-bit mantissa
inputs, fp32 accumulation: the precision PyTorch calls "high"), and batches are copied from pinned host
memory without blocking, so the copy overlaps the previous step's kernels.

Precision `auto` (every command's default) is bf16 where the hardware runs it natively and fp32
elsewhere: bf16 on a GPU with bf16 tensor cores, and on a CPU whose oneDNN reports native bf16
(AVX-512 BF16 or AMX); on other CPUs (AVX2 laptops, many cloud machines) torch emulates bf16 matmuls,
measured ~100x slower than fp32, so `auto` keeps fp32 there.

Threads: as many compute threads as CPUs this process may run on (`os.sched_getaffinity`, which a
container's or `taskset`'s CPU set shrinks), or `--threads N`. How idle OpenMP threads wait is set by
the `bertkit` command before torch loads (machine.py): spinning on a quiet machine, sleeping when other
work already runs on the CPUs.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from dataclasses import dataclass

import torch

from bertkit.errors import BertkitError
from bertkit.machine import available_cpus, busy_cpus

PRECISIONS = ("auto", "fp32", "bf16")
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def default_device(name: str | None = None) -> torch.device:
    """`name` if given, else CUDA when available; prepares the device for fast matmuls."""
    device = torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return device


def to_device(batch: dict, device: torch.device, keys=None) -> dict:
    """The batch's tensors (those named in `keys`, or all) on `device`; via pinned memory for CUDA."""
    pin = device.type == "cuda"
    return {k: (v.pin_memory() if pin else v).to(device, non_blocking=pin)
            for k, v in batch.items() if keys is None or k in keys}


# ----------------------------------------------------------------------------------------------
# The machine


@functools.cache
def cpu_info() -> dict:
    """The CPU's model name and which of the flags that matter for speed it has (Linux /proc/cpuinfo)."""
    model, flags = "unknown CPU", set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and model == "unknown CPU":
                    model = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    import platform

    model = model if model != "unknown CPU" else (platform.processor() or model)
    return {"model": model, "flags": {f: f in flags for f in CPU_FLAGS}, "cpus": available_cpus(),
            "isa": torch.backends.cpu.get_cpu_capability()}


def machine_summary() -> str:
    """One line for every benchmark table: the CPU, its relevant flags, the CPUs this process may use."""
    info = cpu_info()
    flags = " ".join(f"{name}{'+' if has else '-'}" for name, has in info["flags"].items())
    line = (f"CPU: {info['model']}, {info['cpus']} CPUs available, {torch.get_num_threads()} threads; flags: {flags}; "
            f"torch {torch.__version__} (kernels: {info['isa']}, oneDNN native bf16: {cpu_native_bf16()})")
    if torch.cuda.is_available():
        line += f"; GPU: {torch.cuda.get_device_name()}"
    return line


def configure_threads(threads: int | None = None) -> int:
    """Set torch's compute threads: `threads`, else OMP_NUM_THREADS where the user set it, else the CPUs this
    process may run on (shared out between torchrun's processes on this machine). Returns the number."""
    available = available_cpus()
    if threads is not None and threads < 1:
        raise BertkitError(f"--threads {threads}: must be at least 1", hint=f"this process may use {available} CPUs")
    if threads is None and os.environ.get("OMP_NUM_THREADS"):  # the user's own setting stands
        return torch.get_num_threads()
    local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)  # torchrun's processes on this machine
    n = threads or max(1, available // max(1, local_processes))
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def oversubscription_note(threads: int | None = None) -> str | None:
    """A one-line note when other work already keeps the CPUs busy, so this run will share them
    (said by the long-running commands, pre-training and fine-tuning, as their work starts)."""
    threads = threads or torch.get_num_threads()
    busy, cpus = busy_cpus(), available_cpus()
    if busy < max(1, cpus // 2) or busy + threads <= cpus:
        return None
    return (f"note: {busy} other thread(s) are already running on this machine's {cpus} CPUs; this run ({threads} "
            f"threads) will share them and both will be slower. Runs side by side go best with --threads "
            f"{max(1, cpus // 2)} each, or one at a time")


# ----------------------------------------------------------------------------------------------
# Precision


@dataclass(frozen=True)
class Precision:
    name: str  # what runs: "fp32" or "bf16"
    requested: str  # what was asked for: "auto", "fp32" or "bf16"
    reason: str

    def autocast(self, device: torch.device):
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.name == "bf16")

    def describe(self) -> str:
        return f"precision {self.name} ({self.reason})"


@functools.cache
def cpu_native_bf16() -> bool:
    """Whether oneDNN runs bf16 natively on this CPU (AVX-512 BF16, AMX), rather than emulating it."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # an older torch without the query: measure instead
        return bf16_slowdown() < 2.0


@functools.cache
def bf16_slowdown() -> float:
    """How many times slower a bf16 matmul is than fp32 on this CPU (a one-off 512x512x512 measurement)."""
    a = torch.randn(512, 512)
    times = {}
    for dtype in (torch.float32, torch.bfloat16):
        x = a.to(dtype)
        x @ x
        start = time.perf_counter()
        for _ in range(3):
            x @ x
        times[dtype] = time.perf_counter() - start
    return times[torch.bfloat16] / times[torch.float32]


def native_bf16(device: torch.device) -> tuple[bool, str]:
    """(whether `device` runs bf16 natively, why we think so)."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        try:
            ok = torch.cuda.is_bf16_supported(including_emulation=False)
        except TypeError:  # torch < 2.3
            ok = torch.cuda.is_bf16_supported()
        return ok, f"{name} {'has' if ok else 'has no'} bf16 tensor cores"
    if device.type == "cpu":
        info = cpu_info()
        flags = ", ".join(f for f, has in info["flags"].items() if has) or "none of " + ", ".join(CPU_FLAGS)
        if cpu_native_bf16():
            return True, f"this CPU runs bf16 natively (oneDNN; flags: {flags})"
        return False, f"this CPU has no native bf16 (oneDNN emulates it; flags: {flags})"
    return False, f"{device.type}: native bf16 unknown"


_announced: set = set()


def resolve_precision(requested: str, device: torch.device, announce: bool = True) -> Precision:
    """The precision that runs for `--precision requested` on `device`; says so once per process on stderr.

    `auto`: bf16 where native, else fp32. `bf16` where it is emulated: a CPU runs it with a warning that
    says how much slower it is; a GPU without bf16 is refused."""
    if requested not in PRECISIONS:
        raise BertkitError(f"--precision {requested!r}: not one of {', '.join(PRECISIONS)}",
                           hint="auto (the default) picks bf16 where the hardware runs it natively, else fp32")
    native, why = native_bf16(device)
    warning = None
    if requested == "auto":
        chosen = Precision("bf16" if native else "fp32", "auto", f"auto: {why}")
    elif requested == "bf16" and not native:
        if device.type == "cuda":
            raise BertkitError(f"--precision bf16: {why}", hint="use --precision fp32 or auto on this GPU")
        chosen = Precision("bf16", "bf16", f"requested; {why}")
        warning = (f"warning: --precision bf16 on a CPU without native bf16: matmuls run about "
                   f"{bf16_slowdown():.0f}x slower than fp32 here; --precision auto picks fp32")
    else:
        chosen = Precision(requested, requested, f"requested; {why}")
    if announce and (chosen, device.type) not in _announced:
        _announced.add((chosen, device.type))
        if warning:
            print(warning, file=sys.stderr)
        print(chosen.describe(), file=sys.stderr)
    return chosen
