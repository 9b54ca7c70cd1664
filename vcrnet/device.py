"""Where a command trains or predicts: ``--device auto|cpu|cuda``.

``auto`` takes a CUDA GPU when torch sees one and the CPU otherwise; ``cuda`` where torch sees
none is refused in one line (before anything is written); each choice comes with the line that
says which device, and why.
"""

from __future__ import annotations

import torch

from vcrnet.errors import InputError

DEVICES = ("auto", "cpu", "cuda")


def check_device(name: str) -> None:
    """``--device``'s value is one this machine can honour (an ``InputError`` otherwise)."""
    if name not in DEVICES:
        raise InputError(f"--device {name}: must be one of {', '.join(DEVICES)}")
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError(
            "--device cuda: torch sees no CUDA GPU on this machine; pass --device auto or cpu"
        )


def choose_device(name: str) -> tuple[str, str]:
    """The device ``--device name`` means here (``"cuda"`` or ``"cpu"``) and the line that says
    which (checked first: ``check_device``)."""
    check_device(name)
    if name == "cpu" or not torch.cuda.is_available():
        why = "" if name == "cpu" else ", no CUDA GPU seen"
        return "cpu", f"device: cpu ({torch.get_num_threads()} threads{why})"
    return "cuda", f"device: cuda ({torch.cuda.get_device_name(0)})"
