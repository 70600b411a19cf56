"""Input checks shared by every entry point: bad input is refused before any work starts.

Each check raises ``ValueError`` (a ``TypeError`` never reaches the user) whose message names the argument,
the value it got and what is expected, so the CLIs, the training config and the ComfyUI nodes all report a
problem the same way. Values typed by people (YAML, flags, widgets) go through the strict parsers
(:func:`as_bool`, :func:`as_int`, :func:`as_float`): ``"false"`` is False, ``"1e-4"`` is 1e-4, ``"many"`` is an
error, and NaN or infinity is never a valid setting.
"""
from __future__ import annotations

import errno
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

import torch

_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


# ---------------------------------------------------------------------------------------------- scalars
def _range_text(lo: Optional[float], hi: Optional[float], lo_open: bool = False) -> str:
    if lo is not None and hi is not None:
        return f"in {'(' if lo_open else '['}{lo}, {hi}]"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {lo}"
    return f"<= {hi}"


def _in_range(name: str, value: float, lo: Optional[float], hi: Optional[float], lo_open: bool, hint: str) -> None:
    if (lo is not None and (value <= lo if lo_open else value < lo)) or (hi is not None and value > hi):
        raise ValueError(f"{name} must be {_range_text(lo, hi, lo_open)}, got {value!r}" + (f"; {hint}" if hint else ""))


def as_bool(name: str, value: Any) -> bool:
    """A boolean setting: True/False, or one of the words true/false, yes/no, on/off, 1/0 (any case)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError(f"{name} must be true or false, got {value!r}")


def as_int(name: str, value: Any, lo: Optional[int] = None, hi: Optional[int] = None, hint: str = "") -> int:
    """An integer setting (an int, a whole float such as 1000.0, or its text), optionally in ``[lo, hi]``."""
    number: Any = value
    if isinstance(value, str):
        text = value.strip()
        try:
            number = int(text)
        except ValueError:
            try:
                number = float(text)
            except ValueError:
                number = None
    if isinstance(number, float) and math.isfinite(number) and number.is_integer():
        number = int(number)
    if isinstance(number, bool) or not isinstance(number, int):
        raise ValueError(f"{name} must be a whole number, got {value!r}" + (f"; {hint}" if hint else ""))
    _in_range(name, number, lo, hi, False, hint)
    return number


def as_float(name: str, value: Any, lo: Optional[float] = None, hi: Optional[float] = None, *,
             lo_open: bool = False, hint: str = "") -> float:
    """A finite real setting (a number or its text, e.g. YAML's ``1e-4`` that PyYAML reads as a string)."""
    number: Any = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = None
    elif torch.is_tensor(value) and value.numel() == 1 and not value.dtype.is_complex:
        number = float(value)
    if number is None or not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number, got {value!r}" + (f"; {hint}" if hint else ""))
    _in_range(name, number, lo, hi, lo_open, hint)
    return number


def one_of(name: str, value: Any, choices: Iterable[str]) -> str:
    """A setting that must be one of ``choices`` (exact, case-sensitive)."""
    choices = list(choices)
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(str, choices))}; got {value!r}")
    return value


# ---------------------------------------------------------------------------------------------- tensors
def shape_of(value: Any) -> Any:
    """The shape of a tensor as a tuple, or the type name of anything else (for messages)."""
    return tuple(value.shape) if torch.is_tensor(value) else type(value).__name__


def tensor(name: str, value: Any, ndim: int | tuple[int, ...], expected: str) -> torch.Tensor:
    """A tensor of rank ``ndim`` (one of them) holding only finite values; ``expected`` describes it, e.g.
    ``"text embeddings [B, tokens, 768]"``."""
    ranks = (ndim,) if isinstance(ndim, int) else ndim
    if not torch.is_tensor(value) or value.ndim not in ranks:
        raise ValueError(f"{name} must be {expected}, got {shape_of(value)}")
    finite(name, value)
    return value


def finite(name: str, value: torch.Tensor) -> torch.Tensor:
    """Refuse a tensor holding NaN or infinity, saying how many values are bad."""
    if value.is_floating_point() or value.is_complex():
        bad = int((~torch.isfinite(value)).sum())
        if bad:
            raise ValueError(f"{name} holds {bad} NaN/inf value(s) of {value.numel()}; it must be finite (check "
                             "what produced it: a broken model, an fp16 overflow, or an uninitialised tensor)")
    return value


def first_nonfinite(tensors: Mapping[str, torch.Tensor]) -> Optional[str]:
    """The name of the first tensor (in the mapping's order) that holds NaN or infinity, or None."""
    for key, value in tensors.items():
        if torch.is_tensor(value) and value.is_floating_point() and not value.is_meta \
                and not bool(torch.isfinite(value).all()):
            return key
    return None


def nan_advice(device: torch.device | str, dtype: torch.dtype) -> str:
    """What to try when a computation on ``device`` in ``dtype`` produced NaN/inf."""
    kind = torch.device(device).type
    if dtype == torch.float16:
        return (f"fp16 overflowed on {kind}: compute in bf16 or fp32 (dtype input / --dtype), or lower the "
                "guidance scale")
    if dtype == torch.bfloat16:
        return f"bf16 on {kind}: try fp32, or lower the guidance scale"
    return (f"the computation was already {str(dtype).replace('torch.', '')} on {kind}, so this is not a "
            "precision problem: the model weights or the inputs are broken (reload them; check the motion file "
            "and the base model), or the guidance scale is extreme")


# ---------------------------------------------------------------------------------------------- devices
def compute_device(name: Optional[str], what: str = "--device") -> torch.device:
    """The device a user named (``None``, ``""`` or ``"auto"``: CUDA when available, else the CPU), refused
    with a ``ValueError`` when it is not a device name or cannot be used on this machine (e.g. ``cuda`` with a
    CPU-only PyTorch), instead of torch's traceback at the first model move."""
    if name is None or str(name).strip().lower() in ("", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(str(name).strip())
    except (RuntimeError, ValueError):
        raise ValueError(f"{what} {name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "meta":
        raise ValueError(f"{what} meta holds no data; use auto, cpu, cuda or cuda:N")
    if device.type != "cpu":
        try:
            torch.empty(1, device=device)
        except Exception as err:  # noqa: BLE001 - torch raises AssertionError/RuntimeError/… by backend
            reason = " ".join(str(err).split())[:160] or type(err).__name__
            raise ValueError(f"{what} {name}: this device cannot be used here ({reason}); use --device cpu, or "
                             "auto to take a GPU only when one is usable") from None
    return device


# ---------------------------------------------------------------------------------------------- files
def writable_dir(path: str | os.PathLike, what: str) -> Path:
    """Create ``path`` if needed and prove a file can be written in it; ``what`` names the setting."""
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".lamp-write-test-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        reason = "no space left on the device" if err.errno == errno.ENOSPC else (err.strerror or str(err))
        raise ValueError(f"{what} {str(folder)!r} cannot be written ({reason}); choose a folder you can write "
                         "to") from None
    return folder
