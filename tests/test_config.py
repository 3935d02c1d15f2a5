"""Tests of configuration loading, validation and hashing (segsam.config)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import segsam.config as config_module
from segsam.config import (
    DEFAULT_CONFIG,
    config_hash,
    dataset_config,
    deep_merge,
    encoder_settings,
    encoder_tag,
    flatten,
    load_config,
    schema_defaults,
    validate,
    validate_section,
)
from segsam.errors import ConfigError
from segsam.methods import METHODS

REPO = Path(__file__).resolve().parents[1]


def _overlay(tmp_path: Path, content: dict[str, Any]) -> Path:
    path = tmp_path / "overlay.yaml"
    path.write_text(yaml.safe_dump(content), encoding="utf-8")
    return path


def test_default_config_validates() -> None:
    config = load_config()
    assert config == yaml.safe_load(DEFAULT_CONFIG.read_text(encoding="utf-8"))
    assert set(config["methods"]) <= set(METHODS)


def test_tiny_overlay_validates_and_merges_deeply() -> None:
    path = REPO / "config" / "tiny.yaml"
    overlay = yaml.safe_load(path.read_text(encoding="utf-8"))
    default = load_config()
    tiny = load_config(path)
    assert tiny == deep_merge(default, overlay)
    assert tiny["run_name"] == overlay["run_name"]
    # keys the overlay does not mention keep their defaults, also inside nested sections
    assert tiny["dataset"]["demo"]["modalities"] == default["dataset"]["demo"]["modalities"]
    assert tiny["slicing"]["min_mask_fraction"] == default["slicing"]["min_mask_fraction"]


def test_missing_overlay_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_config(missing)


@pytest.mark.parametrize(
    ("overlay", "key"),
    [
        ({"colour": "blue"}, "colour"),
        ({"slicing": {"strid": 3}}, "slicing.strid"),
        ({"text": {"llm": {"modle": "x"}}}, "text.llm.modle"),
        ({"train": {"epochs": "ten"}}, "train.epochs"),
        ({"evaluate": {"threshold": 1.5}}, "evaluate.threshold"),
        ({"methods": ["medsam_lite", "not_a_method"]}, "methods.1"),
        ({"predict": {"method": "not_a_method"}}, "predict.method"),
    ],
    ids=[
        "unknown-top-level",
        "unknown-nested",
        "unknown-deep",
        "wrong-type",
        "out-of-range",
        "unknown-method",
        "unknown-predict-method",
    ],
)
def test_invalid_config_names_the_key_path(tmp_path: Path, overlay: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(_overlay(tmp_path, overlay))
    message = str(info.value)
    assert f"'{key}'" in message
    assert "\n" not in message


def test_unknown_method_message_names_the_value(config: dict[str, Any]) -> None:
    config["methods"] = ["sam_vit_huge"]
    with pytest.raises(ConfigError, match="sam_vit_huge"):
        validate(config)


def test_missing_key_takes_its_schema_default(config: dict[str, Any]) -> None:
    del config["split"]["seed"]
    del config["text"]["llm"]
    filled = validate(config)
    assert filled["split"]["seed"] == 0 and filled["text"]["llm"]["max_retries"] == 5
    assert "seed" not in config["split"] and "llm" not in config["text"]  # the input is left as it was


def _keys(value: Any, prefix: str = "") -> Iterator[str]:
    """Dotted paths of every key of a nested mapping."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield f"{prefix}{key}"
            yield from _keys(item, f"{prefix}{key}.")


def _schema_node(schema: dict[str, Any], dotted: str) -> dict[str, Any] | None:
    """The schema of a dotted key: a property's schema, ``{}`` for a key of a mapping of user names
    (``split.assign``, ``cross.datasets``), None for a key the schema does not know."""
    node = schema
    for part in dotted.split("."):
        if part in node.get("properties", {}):
            node = node["properties"][part]
        elif isinstance(node.get("additionalProperties"), dict):
            return {}
        else:
            return None
    return node


def test_every_key_of_config_yaml_is_in_the_schema_with_a_default() -> None:
    schema = yaml.safe_load(config_module.SCHEMA_PATH.read_text(encoding="utf-8"))
    demo = yaml.safe_load(DEFAULT_CONFIG.read_text(encoding="utf-8"))
    nodes = {key: _schema_node(schema, key) for key in _keys(demo)}
    assert [key for key, node in nodes.items() if node is None] == []
    assert [key for key, node in nodes.items() if node and "default" not in node] == []


def test_config_yaml_is_the_schema_defaults() -> None:
    """The schema is the one source of defaults; config/config.yaml shows them with comments."""
    demo = yaml.safe_load(DEFAULT_CONFIG.read_text(encoding="utf-8"))
    assert load_config() == deep_merge(schema_defaults(), demo)
    assert schema_defaults() == demo
    assert config_hash(schema_defaults()) == config_hash(load_config())


def test_validate_section_checks_and_completes_one_section() -> None:
    llm = validate_section({"model": "m"}, "text.llm")
    assert llm["model"] == "m" and llm["concurrency"] == 4 and llm["base_url"] is None
    with pytest.raises(ConfigError, match=r"^config key 'text.llm.concurrency': 0 is less than the minimum of 1$"):
        validate_section({"concurrency": 0}, "text.llm")
    with pytest.raises(ConfigError, match=r"'text.embedding.api_key_env': unknown key; the keys of text.embedding"):
        validate_section({"api_key_env": "X"}, "text.embedding")


def _registry(tmp_path: Path, *names: str) -> Path:
    """A registry file holding ``names`` (only the names matter to the config check)."""
    path = tmp_path / "my_datasets.yaml"
    raw = yaml.safe_load((REPO / "config" / "datasets.yaml").read_text(encoding="utf-8"))
    raw["datasets"] = {name: raw["datasets"]["demo"] for name in names}
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def test_a_dataset_added_to_a_registry_needs_no_schema_edit(tmp_path: Path) -> None:
    registry = _registry(tmp_path, "demo", "my_phantoms", "my_volumes")
    overlay = {"dataset": {"name": "my_phantoms", "registry": str(registry)}, "cross": {"datasets": {"my_volumes": {}}}}
    config = load_config(_overlay(tmp_path, overlay))
    assert config["dataset"]["name"] == "my_phantoms" and list(config["cross"]["datasets"]) == ["my_volumes"]


@pytest.mark.parametrize(
    ("overlay", "expected"),
    [
        (
            {"dataset": {"name": "my_phantoms"}},
            "config key 'dataset.name': dataset 'my_phantoms' is not in the dataset registry {registry}; add it "
            "there (known: demo, kits23)",
        ),
        (
            {"cross": {"datasets": {"btcv": None}}},
            "config key 'cross.datasets.btcv': dataset 'btcv' is not in the dataset registry {registry}; add it "
            "there (known: demo, kits23)",
        ),
        (
            {"methods": ["segsam", "sam_huge"]},
            "config key 'methods.1': unknown method 'sam_huge'; add it to segsam/methods.py (known: medsam_lite, ",
        ),
    ],
    ids=["dataset", "cross-dataset", "method"],
)
def test_unknown_registry_name_stops_in_one_line(tmp_path: Path, overlay: dict[str, Any], expected: str) -> None:
    registry = _registry(tmp_path, "demo", "kits23")
    overlay = deep_merge({"dataset": {"registry": str(registry)}}, overlay)
    with pytest.raises(ConfigError) as info:
        load_config(_overlay(tmp_path, overlay))
    message = str(info.value)
    assert message.startswith(expected.format(registry=registry)) and "\n" not in message


def test_missing_registry_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope.yaml: cannot read the dataset registry"):
        load_config(_overlay(tmp_path, {"dataset": {"registry": str(tmp_path / "nope.yaml")}}))


def test_deep_merge_does_not_modify_its_inputs() -> None:
    base = {"a": {"b": 1, "c": 2}, "d": 3}
    override = {"a": {"b": 10}, "e": 4}
    assert deep_merge(base, override) == {"a": {"b": 10, "c": 2}, "d": 3, "e": 4}
    assert base == {"a": {"b": 1, "c": 2}, "d": 3}


def test_flatten() -> None:
    flat = flatten({"a": {"b": {"c": 1}, "s": "text"}, "l": [1, 2], "n": None, "f": 0.5, "t": True})
    assert flat == {"a.b.c": "1", "a.s": "text", "l": "[1, 2]", "n": "null", "f": "0.5", "t": "true"}
    assert all(isinstance(v, str) for v in flat.values())


def test_flatten_of_default_config_has_dotted_leaf_keys(config: dict[str, Any]) -> None:
    flat = flatten(config)
    assert flat["slicing.stride.z"] == str(config["slicing"]["stride"]["z"])
    assert flat["tracking.uri"] == config["tracking"]["uri"]
    assert "slicing" not in flat


def test_config_hash_changes_with_any_value(config: dict[str, Any]) -> None:
    before = config_hash(config)
    assert config_hash(config) == before
    config["slicing"]["stride"]["x"] += 1
    assert config_hash(config) != before


def test_encoder_tag() -> None:
    sha = "79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76"
    assert encoder_tag({"weights": "litemedsam", "sha256": sha}) == "litemedsam-79d8c9dc"
    assert encoder_tag({"weights": "/models/sam_vit_b_01ec64.pth", "sha256": sha}) == "sam_vit_b_01ec64-79d8c9dc"
    assert encoder_tag({"weights": "weights/model.tar.gz", "sha256": None}) == "model-unverified"


def test_encoder_settings_pick_each_encoders_weights(config: dict[str, Any]) -> None:
    tiny, vit_b = encoder_settings(config, "tiny_vit"), encoder_settings(config, "vit_b")
    assert tiny["weights"] == "litemedsam" and tiny["name"] == "tiny_vit"
    assert vit_b["weights"] == config["encoder"]["vit_b"]["weights"] and vit_b["sha256"].startswith("ec2df627")
    assert {k: tiny[k] for k in ("image_size", "batch_size", "bf16")} == {
        k: vit_b[k] for k in ("image_size", "batch_size", "bf16")
    }
    assert "url" not in vit_b and "vit_b" not in tiny  # where the file came from does not change what it holds
    assert encoder_tag(vit_b) == "sam_vit_b_01ec64-ec2df627"
    with pytest.raises(ValueError, match="unknown encoder 'vit_h'"):
        encoder_settings(config, "vit_h")


# --- code_hash: the sources a rule runs, followed through segsam imports ----------------------


@pytest.fixture
def fake_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A tiny ``segsam`` tree: run -> helpers (import), helpers -> pkg.leaf (from-import), other alone."""
    root = tmp_path / "segsam"
    (root / "pkg").mkdir(parents=True)
    for name, text in {
        "__init__.py": "",
        "run.py": "import numpy\nimport segsam.helpers\n",
        "helpers.py": "def f():\n    from segsam.pkg import leaf\n",
        "pkg/__init__.py": "",
        "pkg/leaf.py": "X = 1\n",
        "other.py": "Y = 2\n",
    }.items():
        (root / name).write_text(text)
    monkeypatch.setattr(config_module, "REPO_ROOT", tmp_path)
    monkeypatch.setattr(config_module, "PACKAGE_DIR", root)
    config_module._segsam_imports.cache_clear()
    yield root
    config_module._segsam_imports.cache_clear()


def test_code_hash_follows_imports_but_not_unrelated_modules(fake_package: Path) -> None:
    before = config_module.code_hash("run")
    (fake_package / "other.py").write_text("Y = 3\n")
    assert config_module.code_hash("run") == before  # not imported by run
    (fake_package / "pkg" / "leaf.py").write_text("X = 2\n")
    assert config_module.code_hash("run") != before  # run -> helpers -> (inside a function) pkg.leaf


def test_dataset_config_of_the_training_and_a_cross_dataset(config: dict[str, Any]) -> None:
    config["dataset"]["mirror"] = "/mirror/main"
    config["cross"]["datasets"] = {"kits23": {"mirror": "/mirror/kits", "exclude": ["case_00001"]}, "btcv": None}
    main = dataset_config(config, "demo")
    assert (main["name"], main["mirror"], main["exclude"]) == ("demo", "/mirror/main", [])
    kits = dataset_config(config, "kits23")
    # its own mirror and exclusions; the folders and download policy are the training dataset's
    assert (kits["mirror"], kits["exclude"], kits["labelmap"]) == ("/mirror/kits", ["case_00001"], None)
    assert (kits["download_dir"], kits["download"]) == (
        config["dataset"]["download_dir"],
        config["dataset"]["download"],
    )
    assert dataset_config(config, "btcv")["mirror"] is None  # an entry without settings
    with pytest.raises(ConfigError, match="amos.*neither dataset.name nor one of cross.datasets"):
        dataset_config(config, "amos")


def test_resample_labels_per_dataset(config: dict[str, Any]) -> None:
    assert dataset_config(config, "demo")["resample_labels"] is False  # the default: a label on another grid stops
    config["dataset"]["resample_labels"] = True
    config["cross"]["datasets"] = {"kits23": {"resample_labels": True}, "btcv": None}
    assert dataset_config(config, "demo")["resample_labels"] is True
    assert dataset_config(config, "kits23")["resample_labels"] is True
    assert dataset_config(config, "btcv")["resample_labels"] is False


@pytest.mark.parametrize(
    ("overlay", "key"),
    [
        ({"vocabulary_extra": {"brain oedema": 31}}, "vocabulary_extra"),
        ({"vocabulary_extra": {"brain_oedema": 0}}, "vocabulary_extra.brain_oedema"),
        ({"dataset": {"resample_labels": "yes"}}, "dataset.resample_labels"),
        ({"cross": {"datasets": {"kits23": {"resample_labels": 1}}}}, "cross.datasets.kits23.resample_labels"),
    ],
)
def test_own_data_keys_are_checked(tmp_path: Path, overlay: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match=f"'{key}"):
        load_config(_overlay(tmp_path, overlay))


@pytest.mark.parametrize("name", ["chaos.yaml", "chaos_tiny.yaml"])
def test_chaos_configs_validate(name: str) -> None:
    config = load_config(REPO / "config" / name)
    assert config["dataset"]["name"] == "chaos_t2" and config["methods"][:3] == ["medsam_lite", "ft_decoder", "segsam"]
