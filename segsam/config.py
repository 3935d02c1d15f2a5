"""Configuration: load, validate against the workflow's JSON schema, hash.

The schema (``workflow/schemas/config.schema.yaml``) is the single definition
of every key. Snakemake validates the merged config with it at start-up
(``common.smk``); library code and tests validate through :func:`validate`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from segsam.errors import ConfigError

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


def stable_hash(obj: Any, length: int = 12) -> str:
    """Hash a JSON-serialisable object independently of key order."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:length]


def config_hash(config: Mapping[str, Any]) -> str:
    """The config hash recorded in MLflow tags and results sidecars."""
    return stable_hash(config)


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


def encoder_tag(encoder: Mapping[str, Any]) -> str:
    """Name of a frozen encoder's embedding-cache folder: ``<weights name>-<sha256[:8]>``.

    Args:
        encoder: The ``encoder`` config section (``weights`` and ``sha256``).
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
