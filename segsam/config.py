"""Configuration: load, validate against the workflow's JSON schema, hash.

The schema (``workflow/schemas/config.schema.yaml``) is the single definition
of every key. Snakemake validates the merged config with it at start-up
(``common.smk``); library code and tests validate through :func:`validate`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from segsam.errors import ConfigError
from segsam.hashing import stable_hash

REPO_ROOT = Path(__file__).resolve().parents[1]
SCHEMA_PATH = REPO_ROOT / "workflow" / "schemas" / "config.schema.yaml"
DEFAULT_CONFIG = REPO_ROOT / "config" / "config.yaml"


def _schema() -> dict[str, Any]:
    return yaml.safe_load(SCHEMA_PATH.read_text(encoding="utf-8"))


def validate(config: Mapping[str, Any]) -> None:
    """Validate ``config`` against the schema.

    Raises:
        ConfigError: one line naming the offending key path and the schema's message.
    """
    validator = jsonschema.Draft202012Validator(_schema())
    errors = sorted(validator.iter_errors(dict(config)), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        path = [str(p) for p in err.absolute_path]
        if err.validator == "additionalProperties" and isinstance(err.instance, Mapping):
            # name the unknown key itself (``slicing.strid``), not only its parent section
            known = set(err.schema.get("properties", {}))
            path.extend(sorted(str(k) for k in err.instance if k not in known)[:1])
        key = ".".join(path) or "<top level>"
        raise ConfigError(f"config key '{key}': {err.message}")


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``override`` into ``base`` recursively (as Snakemake merges --configfile)."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_config(*overlays: str | Path) -> dict[str, Any]:
    """Load ``config/config.yaml``, merge the overlay files in order, validate.

    Args:
        *overlays: YAML files merged on top of the default, like ``--configfile``.

    Returns:
        The validated configuration.

    Raises:
        ConfigError: when a file is missing or the merged config is invalid.
    """
    config: dict[str, Any] = {}
    for path in (DEFAULT_CONFIG, *overlays):
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        config = deep_merge(config, yaml.safe_load(path.read_text(encoding="utf-8")) or {})
    validate(config)
    return config


def config_hash(config: Mapping[str, Any]) -> str:
    """The config hash recorded in MLflow tags and results sidecars."""
    return stable_hash(config)


PACKAGE_DIR = REPO_ROOT / "segsam"


def _module_files(dotted: str) -> list[Path]:
    """The source files of a ``segsam`` module or package (dotted, without ``segsam.``)."""
    path = PACKAGE_DIR.joinpath(*dotted.split(".")) if dotted else PACKAGE_DIR
    if path.is_dir():
        return sorted(path.rglob("*.py"))
    return [path.with_suffix(".py")]


# ``import segsam.a.b`` and ``from segsam.a import b, c`` (also parenthesised over several lines);
# a regex, not ``ast``: parsing every module would add a quarter second to each Snakemake start
_IMPORT = re.compile(
    r"^[ \t]*(?:import[ \t]+(segsam(?:\.\w+)*)|from[ \t]+(segsam(?:\.\w+)*)[ \t]+import[ \t]+(\([^)]*\)|[^\n#]*))", re.M
)


@functools.cache
def _segsam_imports(file: Path) -> frozenset[Path]:
    """Files of the ``segsam`` modules that ``file`` imports (anywhere in it), with their packages' ``__init__``."""
    found: set[Path] = set()
    for match in _IMPORT.finditer(file.read_text(encoding="utf-8")):
        name = match.group(1) or match.group(2)
        parts = name.split(".")
        for depth in range(1, len(parts) + 1):  # segsam/__init__.py, segsam/x/__init__.py, ...
            init = PACKAGE_DIR.joinpath(*parts[1:depth], "__init__.py")
            if init.is_file():
                found.add(init)
        module = PACKAGE_DIR.joinpath(*parts[1:])
        if module.with_suffix(".py").is_file():
            found.add(module.with_suffix(".py"))
        elif match.group(3) and module.is_dir():  # from segsam.pkg import module
            names = re.findall(r"\w+", match.group(3).replace(" as ", " "))
            found.update(f for n in names if (f := module / f"{n}.py").is_file())
    return frozenset(found)


def code_hash(*modules: str) -> str:
    """sha256 over the sources of ``segsam`` modules and every ``segsam`` module they import.

    Snakemake does not track imported code; a rule that puts this hash in its
    ``params`` reruns when any of the code it runs changes, and only then.

    Args:
        modules: Dotted names under ``segsam`` (``"evaluate.run"``); a package
            stands for all its modules.
    """
    todo = [f for m in modules for f in _module_files(m)]
    seen: set[Path] = set()
    while todo:
        file = todo.pop()
        if file not in seen:
            seen.add(file)
            todo.extend(_segsam_imports(file) - seen)
    digest = hashlib.sha256()
    for file in sorted(seen):
        digest.update(str(file.relative_to(REPO_ROOT)).encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Flatten nested config into ``{"a.b.c": "value"}`` strings (MLflow params)."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, prefix=f"{name}."))
        else:
            flat[name] = json.dumps(value) if not isinstance(value, str) else value
    return flat


def dataset_config(config: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The settings of one dataset the workflow reads: the training dataset or a cross-dataset one.

    The training dataset's are ``config["dataset"]``. A cross-dataset entry
    (``cross.datasets.<name>``) gives its own ``mirror``, ``labelmap`` and
    ``exclude`` (unset: none); the registry, the download and extract folders
    and the download policy are shared with the training dataset.

    Args:
        config: The whole validated config.
        name: A dataset name (``dataset.name`` or a key of ``cross.datasets``).

    Returns:
        ``{"name", "registry", "labelmap", "mirror", "download_dir", "extract_dir", "exclude", "download"}``.

    Raises:
        ConfigError: ``name`` is neither the training dataset nor a cross dataset.
    """
    main = config["dataset"]
    shared = {key: main[key] for key in ("registry", "download_dir", "extract_dir", "download")}
    if name == main["name"]:
        return {
            **shared,
            "name": name,
            "labelmap": main["labelmap"],
            "mirror": main["mirror"],
            "exclude": list(main["exclude"]),
        }
    cross = config["cross"]["datasets"]
    if name not in cross:
        raise ConfigError(
            f"dataset {name!r} is neither dataset.name nor one of cross.datasets ({', '.join(cross) or 'none'})"
        )
    entry = cross[name] or {}
    return {
        **shared,
        "name": name,
        "labelmap": entry.get("labelmap"),
        "mirror": entry.get("mirror"),
        "exclude": list(entry.get("exclude") or []),
    }


def encoder_settings(config: Mapping[str, Any], encoder: str) -> dict[str, Any]:
    """The settings of one image encoder: what its embedding cache and its methods' jobs depend on.

    ``encoder.weights`` / ``encoder.sha256`` are LiteMedSAM's TinyViT, and
    ``encoder.vit_b.weights`` / ``.sha256`` SAM's ViT-B; ``image_size``,
    ``batch_size`` and ``bf16`` are shared. The ViT-B download address is
    left out: where the file came from does not change what it holds.

    Args:
        config: The whole validated config.
        encoder: ``"tiny_vit"`` or ``"vit_b"``.

    Returns:
        ``{"name", "weights", "sha256", "image_size", "batch_size", "bf16"}``.

    Raises:
        ValueError: If the encoder name is unknown.
    """
    section = config["encoder"]
    shared = {key: section[key] for key in ("image_size", "batch_size", "bf16")}
    if encoder == "tiny_vit":
        return {"name": encoder, "weights": section["weights"], "sha256": section["sha256"], **shared}
    if encoder == "vit_b":
        vit_b = section["vit_b"]
        return {"name": encoder, "weights": vit_b["weights"], "sha256": vit_b["sha256"], **shared}
    raise ValueError(f"unknown encoder {encoder!r}; known: tiny_vit, vit_b")


def encoder_tag(encoder: Mapping[str, Any]) -> str:
    """Name of a frozen encoder's embedding-cache folder: ``<weights name>-<sha256[:8]>``.

    Args:
        encoder: :func:`encoder_settings` of one encoder (``weights`` and ``sha256``).
    """
    weights = str(encoder["weights"])
    stem = weights if weights == "litemedsam" else Path(weights).name.split(".")[0]
    return f"{stem}-{encoder['sha256'][:8] if encoder['sha256'] else 'unverified'}"


def export_pythonpath(folder: str | Path) -> None:
    """Put ``folder`` first on ``PYTHONPATH`` so that rule scripts import this ``segsam``.

    Called by the workflow at start-up: jobs inherit the variable, whichever
    Python runs them (the user's venv or a ``--sdm conda`` environment).
    """
    parts = [str(folder), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(parts))
