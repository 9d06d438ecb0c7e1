"""Where a run computes: the device (``auto`` picks CUDA, then MPS, then the CPU) and the
precision that device supports.
"""

from __future__ import annotations


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


def resolve_precision(precision: str, device: str) -> str:
    """'auto' -> 'bf16' on CUDA, 'fp32' elsewhere; half precision on CPU is refused."""
    if precision == "auto":
        return "bf16" if device == "cuda" else "fp32"
    if precision == "fp16" and device == "cpu":
        raise RuntimeError("precision='fp16' needs a GPU (CPU autocast supports bf16); "
                           "use precision='auto', 'fp32' or 'bf16'")
    return precision
