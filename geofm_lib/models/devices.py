"""Where a run computes: the device (``auto`` picks CUDA, then MPS, then the CPU) and the
precision that device supports.

``precision: auto`` is bf16 autocast where the hardware computes bf16 natively: CUDA GPUs and
CPUs with Intel AMX tiles (Sapphire Rapids and later), where oneDNN's bf16 convolutions and
matmuls run 1.5-2.4x faster than fp32 (measured on the 2-core demo machine: a ResNet-18
fine-tuning step 0.43 -> 0.28 s, the CLIP image tower's inference 1.0 -> 0.43 ms an image);
fp32 everywhere else. Weights, optimiser state, losses and BatchNorm stay fp32 under autocast.
Runs record the precision they used; ``precision: fp32`` gives numbers comparable across
machines.
"""

from __future__ import annotations

import contextlib


def resolve_device(name: str = "auto") -> str:
    """'auto' -> 'cuda' if available, then 'mps', then 'cpu'; an unavailable device is an error."""
    import torch  # deferred: parameters are checked without loading torch (seconds)

    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' but PyTorch sees no CUDA GPU here; use device='auto' "
                           "or 'cpu', or install a CUDA build of torch")
    if name == "mps" and not (getattr(torch.backends, "mps", None) is not None
                              and torch.backends.mps.is_available()):
        raise RuntimeError("device='mps' but Apple's Metal backend is not available here; "
                           "use device='auto' or 'cpu'")
    return name


def cpu_has_native_bf16() -> bool:
    """True on CPUs with AMX tiles (bf16 matrix units); False where torch cannot tell."""
    import torch

    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)  # torch >= 2.3
    try:
        return bool(probe()) if probe is not None else False
    except RuntimeError:
        return False


def resolve_precision(precision: str, device: str) -> str:
    """'auto' -> 'bf16' on CUDA and on CPUs with native bf16 (AMX), 'fp32' elsewhere; half
    precision on CPU is refused."""
    device = device.split(":")[0]
    if precision == "auto":
        if device == "cuda" or (device == "cpu" and cpu_has_native_bf16()):
            return "bf16"
        return "fp32"
    if precision == "fp16" and device == "cpu":
        raise RuntimeError("precision='fp16' needs a GPU (CPU autocast supports bf16); "
                           "use precision='auto', 'fp32' or 'bf16'")
    return precision


def autocast(device: str, precision: str):
    """The autocast context of a resolved precision (``fp32``: none)."""
    import torch

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


def channels_last(module):
    """``module`` with its 4-d weights (convolutions) in channels-last layout, returned.

    oneDNN (CPU) and cuDNN run convolutions faster in that layout under bf16/fp16 autocast: a
    ResNet-18 training step at 64 px, batch 64, bf16 on this 2-core AMX machine took 0.265 ->
    0.228 s on two threads and 0.458 -> 0.389 s on one (1.16-1.18x). Values are unchanged, and
    ViTs (a single patch convolution) and linear layers are left as they are."""
    import torch

    return module.to(memory_format=torch.channels_last)


def images_to(x, device: str):
    """A batch of images (numpy or tensor, (B, C, H, W)) on ``device`` in channels-last layout
    (what :func:`channels_last` modules take without converting it back)."""
    import torch

    t = torch.from_numpy(x) if not isinstance(x, torch.Tensor) else x
    return t.to(device, memory_format=torch.channels_last) if t.ndim == 4 else t.to(device)
