"""Device choice, peak-memory reading and the CPU heap setting, shared by runs and benchmarks."""

from __future__ import annotations

import resource

import torch


def resolve_device(name: str) -> torch.device:
    """`auto` -> cuda if available, else cpu; an unavailable CUDA device is an error naming `device`."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} but CUDA is not available; use device=cpu or auto")
    return device


def peak_memory_mb(device: torch.device) -> float:
    """Peak allocated device memory (CUDA), or the process's peak RSS (CPU), in MiB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def call_peak_memory_mb(fn, device: torch.device) -> float | None:
    """Peak allocated CUDA memory during one call of `fn`, in MiB (None on a CPU, whose RSS peak
    cannot be reset between calls)."""
    if device.type != "cuda":
        fn()
        return None
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) / 2**20


def host_syncs(fn, device: torch.device) -> list[str] | None:
    """The host-device synchronisations one call of `fn` makes (CUDA's sync debug mode warns at
    each `.item()`, `.cpu()`, `nonzero`...), first line of each; None on a CPU."""
    import warnings

    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return [f"{w.filename}:{w.lineno}" for w in caught if "synchronizing" in str(w.message).lower()]


def device_name(device: torch.device) -> str:
    """What produced a timing: the GPU's name, or the CPU's model and thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def init_distributed(name: str) -> torch.device:
    """Under torchrun (WORLD_SIZE > 1): join the process group (NCCL on GPUs, gloo on CPU) and
    return this rank's device (cuda:LOCAL_RANK); otherwise just the resolved device."""
    import os

    device = resolve_device(name)
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD_MAX = 32 * 2**20  # glibc's own ceiling for its dynamic threshold on 64-bit
_heap_retained = False


def retain_cpu_heap() -> bool:
    """Keep freed CPU tensor memory in the process heap for reuse (glibc); True when in effect.

    Why: glibc serves a large allocation from the heap once its (dynamic) mmap threshold has
    grown past it, and hands the heap's free top back to the OS whenever that top exceeds the
    trim threshold. A cache keeps branch outputs alive between steps, so the heap's top is freed
    and grown again all the time, and every regrowth faults in fresh zeroed pages: U-ViT with 29
    blocks of width 384 took 60,000-320,000 minor page faults per cached DPM-Solver-2 NFE-20
    call, about 0.5 s of 14 (uncached calls 0 or, depending on the heap's state, up to 350,000).
    Fixing both thresholds (which also stops glibc's adjusting them) keeps tensors up to 32 MiB
    in the heap and freed memory in the process, as PyTorch's CUDA caching allocator does on a
    GPU: 0 faults per call in both. Process-wide and irreversible; a no-op returning False off
    glibc.
    """
    global _heap_retained
    if _heap_retained:
        return True
    import ctypes
    import platform

    if platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(None)
    _heap_retained = bool(libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)) and bool(
        libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    return _heap_retained


def heap_retained() -> bool:
    """Whether `retain_cpu_heap` is in effect in this process (recorded with each CPU row)."""
    return _heap_retained


class PageFaults:
    """Wraps a function and records the minor page faults of each call (process-wide, Linux):
    on a CPU, a cache that makes the allocator fault in fresh memory pays for it here."""

    def __init__(self, fn):
        self.fn, self.per_call = fn, []

    def __call__(self):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        out = self.fn()
        self.per_call.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
        return out

    def median(self) -> float | None:
        import statistics

        return statistics.median(self.per_call) if self.per_call else None


def tf32_enabled(device: torch.device) -> bool:
    """Whether float32 matmuls may use TF32 on this device (recorded with each row)."""
    return device.type == "cuda" and bool(torch.backends.cuda.matmul.allow_tf32)


def set_tf32(device: torch.device, enabled: bool) -> None:
    """`tf32=true`: let CUDA float32 matmuls use TF32 (no effect on a CPU)."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = enabled
