"""Shared fixtures: repository paths, the real shared data, configs, volume writers.

Real data lives outside the repository in ``<repo>/../shared/data`` (see that
folder's README). Tests that need it are marked ``shared_data`` and use the
:func:`shared_data` fixture, which skips with a reason when the folder is absent
(a fresh user machine does not have it).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import SimpleITK as sitk

from segsam.config import load_config

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT / ".." / "shared" / "data"
VOCABULARY_CSV = REPO_ROOT / "config" / "vocabulary.csv"
LABELMAPS = REPO_ROOT / "config" / "labelmaps"


#: Modules whose tests read the session's tiny run (tests/workflow/conftest.py): under pytest-xdist
#: one worker runs them all, so the run is made once (tests/test_conftest.py checks the list).
TINY_RUN_MODULES = frozenset(
    f"tests/workflow/{name}.py"
    for name in (
        "test_cross",
        "test_fault_injection",
        "test_mlflow_server",
        "test_pg_sam",
        "test_report",
        "test_resume",
        "test_workflow",
    )
)
#: Work units that start first under ``pytest -n``: the longest (docs/testing.md#parallel).
FIRST_UNITS = ("tiny_run", "tests/workflow/test_vit_b.py", "tests/workflow/test_chaos.py")


def work_unit(nodeid: str) -> str:
    """The pytest-xdist work unit of a test: its module, or ``tiny_run`` for the modules that read that run.

    Module- and session-scoped fixtures (a whole workflow run) are then built once, not once per worker.
    """
    module = nodeid.split("::", 1)[0]
    return "tiny_run" if module in TINY_RUN_MODULES else module


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest work units first (a stable sort: the order within each unit is kept)."""
    rank = {unit: i for i, unit in enumerate(FIRST_UNITS)}
    items.sort(key=lambda item: rank.get(work_unit(item.nodeid), len(rank)))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``make test``'s scheduler: whole :func:`work_unit` s, handed out in collection order."""
    from xdist.scheduler import LoadScopeScheduling

    class WorkUnitScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

    config.option.loadscopereorder = False  # keep the collection order: the longest units first
    return WorkUnitScheduling(config, log)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``<repo>/../shared/data``; skips the test when the folder is absent."""
    if not (SHARED_DATA / "totalsegmentator").is_dir():
        pytest.skip(f"real shared data not found at {SHARED_DATA.resolve()} (only on developer/CI machines)")
    return SHARED_DATA.resolve()


@pytest.fixture(scope="session")
def default_config() -> dict[str, Any]:
    """The validated default config, shared by the session: read it, never change it."""
    return load_config()


@pytest.fixture
def config(default_config: dict[str, Any]) -> dict[str, Any]:
    """A private deep copy of the validated default config (``config/config.yaml``)."""
    return copy.deepcopy(default_config)


@pytest.fixture
def slicing_cfg(config: dict[str, Any]) -> dict[str, Any]:
    """The default ``slicing`` section (a copy the test may change)."""
    return config["slicing"]


@pytest.fixture(scope="session")
def vocabulary_csv() -> Path:
    return VOCABULARY_CSV


@pytest.fixture(scope="session")
def labelmaps_dir() -> Path:
    return LABELMAPS


WriteVolume = Callable[..., Path]


def write_volume(
    path: Path,
    array_zyx: np.ndarray,
    *,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    origin: Sequence[float] = (0.0, 0.0, 0.0),
    direction: Sequence[float] = (1, 0, 0, 0, 1, 0, 0, 0, 1),
) -> Path:
    """Write a numpy array (array order z, y, x) as a volume with the given geometry."""
    image = sitk.GetImageFromArray(array_zyx)
    image.SetSpacing(tuple(float(s) for s in spacing))
    image.SetOrigin(tuple(float(o) for o in origin))
    image.SetDirection(tuple(float(d) for d in direction))
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))
    return path


@pytest.fixture
def write_vol() -> WriteVolume:
    """The :func:`write_volume` helper (a fixture, so tests need not import conftest)."""
    return write_volume


@pytest.fixture(scope="session")
def random_vit_b(tmp_path_factory) -> tuple[Path, str]:
    """(path, sha256) of a random SAM ViT-B checkpoint in the official layout (``segsam.models.stand_in``)."""
    from segsam.models.stand_in import write_random_sam_vit_b

    path = tmp_path_factory.mktemp("vit_b") / "sam_vit_b_01ec64.pth"
    return path, write_random_sam_vit_b(path)
