"""Two benchmarks still run: the GPU check's CPU smoke run and the decoder floor at its smallest.

``benchmarks/gpu_check.py`` runs only on GPU machines; its ``--smoke`` mode takes
the same code paths on the CPU (tiny batch, float32, a small ViT), so this test
catches the script rotting between GPU runs. ``benchmarks/decoder_floor.py`` is
run with one image pair, one mask each and one timed step per method.
In CI each runs one method of each kind it times (under a minute on 2 cores); the timeouts leave
room for a busy machine.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# one method of each kind the script times (CI time): cached and re-encoded frozen encoder, adapters, prompt-free
SMOKE_METHODS = ["ft_decoder", "sam_med2d", "unet"]


def run_benchmark(script: str, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run ``benchmarks/<script>`` with this interpreter in the repository root; fail with its output."""
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / script), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, f"{script} exited {proc.returncode}:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc


def test_gpu_check_smoke_prints_a_row_per_method(tmp_path: Path) -> None:
    out = tmp_path / "smoke.json"
    proc = run_benchmark("gpu_check.py", "--smoke", "--methods", *SMOKE_METHODS, "--out", str(out), timeout=300)
    for method in SMOKE_METHODS:
        assert re.search(rf"^\| {re.escape(method)} \|.*\| ok \|$", proc.stdout, re.M), f"no ok row for {method}"
    results = json.loads(out.read_text(encoding="utf-8"))
    assert {r["method"] for r in results["methods"]} == set(SMOKE_METHODS)
    assert all(r["status"] == "ok" and r["images_per_s"] > 0 for r in results["methods"])
    assert [r["status"] for r in results["encoder"]] == ["ok", "ok"]
    assert all(r["tflop_per_step"] > 0 for r in results["encoder"])
    assert results["rule"] == []  # only with --with-rule in the smoke run


def test_decoder_floor_prints_the_ratio(tmp_path: Path) -> None:
    out = tmp_path / "floor.json"
    args = ["--methods", "ft_decoder", "--batch", "2", "--masks", "1", "--repeats", "1", "--warmup", "0"]
    args += ["--json", str(out)]
    proc = run_benchmark("decoder_floor.py", *args, timeout=300)
    assert "| cached/floor |" in proc.stdout
    for method in ("ft_decoder",):
        row = re.search(rf"^\| {method} \| 2 \| 2 \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|", proc.stdout, re.M)
        assert row, f"no row for {method} in:\n{proc.stdout}"
        floor, cached, ratio = (float(x) for x in row.groups())
        assert floor > 0 and cached > 0 and ratio > 0
    rows = json.loads(out.read_text(encoding="utf-8"))
    assert [r["method"] for r in rows] == ["ft_decoder"]
    assert all(abs(r["ratio"] - r["cached_s"] / r["floor_s"]) < 1e-9 for r in rows)
