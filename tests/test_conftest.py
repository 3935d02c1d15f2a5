"""The test suite's own scheduling (tests/conftest.py): what runs together under pytest-xdist."""

from __future__ import annotations

import pytest

from tests.conftest import FIRST_UNITS, TINY_RUN_MODULES, work_unit


def test_the_tiny_run_modules_are_those_that_read_it(request: pytest.FixtureRequest) -> None:
    readers = {item.nodeid.split("::", 1)[0] for item in request.session.items if "tiny_run" in item.fixturenames}
    collected = {item.nodeid.split("::", 1)[0] for item in request.session.items}
    missing = readers - TINY_RUN_MODULES
    assert not missing, f"add {sorted(missing)} to TINY_RUN_MODULES in tests/conftest.py (or the run is made twice)"
    stale = (TINY_RUN_MODULES & collected) - readers
    assert not stale, f"{sorted(stale)} no longer read the tiny run: drop them from TINY_RUN_MODULES"


def test_work_units_keep_a_module_whole_and_start_with_the_longest(request: pytest.FixtureRequest) -> None:
    assert work_unit("tests/workflow/test_resume.py::test_x") == work_unit("tests/workflow/test_cross.py::test_y")
    assert work_unit("tests/data/test_io.py::test_a[1]") == "tests/data/test_io.py"
    order = list(dict.fromkeys(work_unit(item.nodeid) for item in request.session.items))  # as handed out
    first = [unit for unit in FIRST_UNITS if unit in order]
    assert order[: len(first)] == first
