"""Fixtures of the prediction tests: small scans on unusual grids, a tiny U-Net checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from segsam.methods import get_method
from segsam.models.method_model import trained_state
from tests.conftest import write_volume
from tests.helpers import method_model

#: A RAS direction with the y axis flipped (orientation "RPS"): neither the file's voxel order nor LPS.
RPS = (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


def ct_phantom(shape_zyx: tuple[int, int, int] = (4, 30, 40)) -> np.ndarray:
    """Air around a soft-tissue body holding a brighter block (HU, int16)."""
    z, y, x = shape_zyx
    volume = np.full(shape_zyx, -1000, dtype=np.int16)
    volume[:, 3 : y - 3, 3 : x - 3] = 0
    volume[:, y // 3 : 2 * y // 3, x // 4 : x // 2] = 120
    return volume


@pytest.fixture
def small_ct(tmp_path: Path) -> Path:
    """A 40 x 30 x 4 CT, 1.5 x 1.2 x 4 mm (non-square pixels), direction RPS."""
    return write_volume(
        tmp_path / "scans" / "small.nii.gz",
        ct_phantom(),
        spacing=(1.5, 1.2, 4.0),
        origin=(10.0, -5.0, 2.0),
        direction=RPS,
    )


@pytest.fixture(scope="session")
def unet_checkpoint(tmp_path_factory: pytest.TempPathFactory, default_config: dict[str, Any]) -> Path:
    """A randomly initialised U-Net saved as a training run saves it."""
    torch.manual_seed(0)
    model = method_model("unet", default_config)
    path = tmp_path_factory.mktemp("unet") / "checkpoint.pt"
    torch.save(trained_state(model), path)
    assert get_method("unet").prompt_free
    return path
