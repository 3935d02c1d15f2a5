"""Issue 7: `snakemake --report` builds the HTML report, and headless Chromium renders it."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import matplotlib.pyplot as plt
import pytest

from tests.workflow.wfutils import snakemake

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--virtual-time-budget=20000",
]


@pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium is not installed (Debian package 'chromium'; .ci/run installs it)"
)
def test_report_renders_in_headless_chromium(tiny_run: Path, tmp_path: Path) -> None:
    snakemake(tiny_run, "--report", "results/report.html")
    report = tiny_run / "results/report.html"
    html = report.read_text(encoding="utf-8")
    for name in ("table1.csv", "table1.png", "qualitative.png", "training_curves.png"):
        assert name in html
    expected = (">Snakemake<", ">Figures<", ">Tables<", ">Workflow<", ">Statistics<")
    for attempt in range(3):  # a loaded machine may need another go for the page's scripts to finish
        dom = subprocess.run(
            [CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / f'profile{attempt}'}", "--dump-dom", report.as_uri()],
            capture_output=True,
            encoding="utf-8",
            errors="replace",
            timeout=180,
        ).stdout
        dom = re.sub(r"base64,[A-Za-z0-9+/=]+", "", dom)
        missing = [text for text in expected if text not in dom]
        if not missing:
            break
    assert not missing, f"{missing} not rendered"
    shot = tmp_path / "report.png"
    subprocess.run(
        [
            CHROMIUM,
            *FLAGS,
            f"--user-data-dir={tmp_path / 'profile-shot'}",
            "--window-size=1200,800",
            f"--screenshot={shot}",
            report.as_uri(),
        ],
        capture_output=True,
        timeout=120,
    )
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = plt.imread(shot)[..., :3]
    # the page drew its navigation and the rule graph (a blank page has no dark pixels; the
    # rendered report, light or dark theme, has about 2% or more)
    assert (pixels.mean(axis=2) < 0.9).mean() > 0.005
