"""Configuration: load, fill defaults and validate against the workflow's JSON schema, hash.

The schema (``workflow/schemas/config.schema.yaml``) is the single definition
of every key, its checks and its default. Snakemake validates the merged config
with it at start-up and sets missing keys to their defaults
(``snakemake.utils.validate`` in ``common.smk``); library code and tests do the
same through :func:`validate` and :func:`load_config`, and a stage that takes
one config section builds it with :func:`validate_section`.

Names that live in a registry are checked by :func:`check_names` rather than
listed in the schema: dataset names against the dataset registry file
(``dataset.registry``), method names against :mod:`segsam.methods`. Adding a
dataset or a method then needs no schema edit.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from segsam.errors import ConfigError
from segsam.hashing import stable_hash
from segsam.methods import METHODS

REPO_ROOT = Path(__file__).resolve().parents[1]
SCHEMA_PATH = REPO_ROOT / "workflow" / "schemas" / "config.schema.yaml"
DEFAULT_CONFIG = REPO_ROOT / "config" / "config.yaml"
#: Where a new method is added (named in the error for an unknown one).
METHODS_FILE = "segsam/methods.py"


def read_yaml(path: str | Path, what: str) -> Any:
    """Parse a YAML file; a missing or malformed file is a one-line :class:`ConfigError`.

    Args:
        path: The file.
        what: What the file is, for the message (``"dataset registry"``).

    Returns:
        The parsed document.

    Raises:
        ConfigError: ``<path>: cannot read the <what> (line N: problem)``.
    """
    try:
        return yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        mark = getattr(err, "problem_mark", None)
        problem = getattr(err, "problem", None) or str(err).strip().splitlines()[0]
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise ConfigError(f"{path}: cannot read the {what} ({where}{problem})") from err


@functools.cache
def _schema() -> dict[str, Any]:
    """The parsed schema (shared: never modify it; defaults are copied before use)."""
    return read_yaml(SCHEMA_PATH, "config schema")


def _fill_defaults(
    validator: jsonschema.protocols.Validator, properties: Mapping[str, Any], instance: Any, schema: Mapping[str, Any]
) -> Iterator[jsonschema.ValidationError]:
    """The ``properties`` keyword, first setting each absent property that has a ``default`` to a copy of it."""
    if validator.is_type(instance, "object"):
        for name, subschema in properties.items():
            if "default" in subschema and name not in instance:
                instance[name] = copy.deepcopy(subschema["default"])
    yield from jsonschema.Draft202012Validator.VALIDATORS["properties"](validator, properties, instance, schema)


#: Draft 2020-12 validation that fills defaults as it goes, like ``snakemake.utils.validate(set_default=True)``.
_DefaultingValidator = jsonschema.validators.extend(jsonschema.Draft202012Validator, {"properties": _fill_defaults})


def _raise_first(errors: Iterable[jsonschema.ValidationError], prefix: tuple[str, ...] = ()) -> None:
    """Raise the first error (by key path) as one line naming the key; nothing when there is none."""
    ordered = sorted(errors, key=lambda e: [str(p) for p in e.absolute_path])
    if not ordered:
        return
    err = ordered[0]
    path = [*prefix, *(str(p) for p in err.absolute_path)]
    if err.validator == "additionalProperties" and isinstance(err.instance, Mapping):
        # name the unknown key itself (``slicing.strid``), not only its parent section
        known = list(err.schema.get("properties", {}))
        unknown = sorted(str(k) for k in err.instance if k not in known)
        if known and unknown:
            where = ".".join(path) or "the top level"
            raise ConfigError(
                f"config key '{'.'.join([*path, unknown[0]])}': unknown key; the keys of {where} are {', '.join(known)}"
            )
    key = ".".join(path) or "<top level>"
    raise ConfigError(f"config key '{key}': {err.message}")


def validate(config: Mapping[str, Any], root: str | Path = REPO_ROOT) -> dict[str, Any]:
    """Validate ``config`` against the schema, with missing keys set to their defaults; check registry names.

    Args:
        config: A whole config (``config`` itself is left unchanged).
        root: Folder that a relative ``dataset.registry`` path is relative to.

    Returns:
        A copy of ``config`` with every missing key set to its schema default.

    Raises:
        ConfigError: one line naming the offending key path and the problem.
    """
    filled = copy.deepcopy(dict(config))
    _raise_first(_DefaultingValidator(_schema()).iter_errors(filled))
    check_names(filled, root)
    return filled


def validate_section(section: Mapping[str, Any], key: str) -> dict[str, Any]:
    """Validate one config section against its part of the schema, with missing keys set to their defaults.

    For stages that take a section rather than the whole config (``text.llm``
    for the describe stage): the schema's checks and defaults apply to it, and
    the stage keeps none of its own.

    Args:
        section: The section's mapping (``section`` itself is left unchanged).
        key: Its dotted key path, e.g. ``"text.llm"``.

    Returns:
        A copy of ``section`` with every missing key set to its schema default.

    Raises:
        ConfigError: one line naming the offending key path (``text.llm.concurrency``).
        KeyError: ``key`` is not a section of the schema.
    """
    schema = _schema()
    subschema: Mapping[str, Any] = schema
    for part in key.split("."):
        subschema = subschema["properties"][part]
    filled = copy.deepcopy(dict(section))
    validator = _DefaultingValidator({**subschema, "$defs": schema["$defs"]})
    _raise_first(validator.iter_errors(filled), tuple(key.split(".")))
    return filled


def schema_defaults() -> dict[str, Any]:
    """The config made of the schema's defaults alone (the offline demo, ``config/config.yaml``)."""
    defaults: dict[str, Any] = {}
    _raise_first(_DefaultingValidator(_schema()).iter_errors(defaults))
    return defaults


def registry_names(registry: str | Path) -> list[str]:
    """The dataset names of a registry file (its ``datasets`` keys), without validating the entries.

    The entries are validated by :func:`segsam.data.registry.load_registry`; the
    names are all that :func:`check_names` needs, and reading them here keeps
    the config module free of the data stage.

    Args:
        registry: The registry YAML (``dataset.registry``).

    Returns:
        The names, sorted.

    Raises:
        ConfigError: the file is missing, malformed, or has no ``datasets`` mapping.
    """
    raw = read_yaml(registry, "dataset registry")
    datasets = raw.get("datasets") if isinstance(raw, Mapping) else None
    if not isinstance(datasets, Mapping):
        raise ConfigError(f"{registry}: the dataset registry has no 'datasets' mapping")
    return sorted(str(name) for name in datasets)


def check_names(config: Mapping[str, Any], root: str | Path = REPO_ROOT) -> None:
    """Check the names that live in a registry: datasets in ``dataset.registry``, methods (``methods``,
    ``predict.method``) in :mod:`segsam.methods`.

    Called by :func:`validate` and at workflow start-up (``common.smk``), after
    the schema check.

    Args:
        config: A config that passed the schema.
        root: Folder that a relative ``dataset.registry`` path is relative to
            (the workflow's working directory in ``common.smk``).

    Raises:
        ConfigError: one line naming the key, the unknown name, where to add it and the known names.
    """
    registry = Path(config["dataset"]["registry"])
    known = registry_names(registry if registry.is_absolute() else Path(root) / registry)
    named = [("dataset.name", config["dataset"]["name"])]
    named += [(f"cross.datasets.{name}", name) for name in config["cross"]["datasets"]]
    for key, name in named:
        if name not in known:
            raise ConfigError(
                f"config key '{key}': dataset {name!r} is not in the dataset registry {registry}; add it there "
                f"(known: {', '.join(known)})"
            )
    methods = [(f"methods.{index}", name) for index, name in enumerate(config["methods"])]
    methods.append(("predict.method", config["predict"]["method"]))
    for key, name in methods:
        if name not in METHODS:
            raise ConfigError(
                f"config key '{key}': unknown method {name!r}; add it to {METHODS_FILE} (known: {', '.join(METHODS)})"
            )


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
    """Load ``config/config.yaml``, merge the overlay files in order, fill defaults, validate.

    Args:
        *overlays: YAML files merged on top of the default, like ``--configfile``.

    Returns:
        The validated configuration, every key set (missing ones to their schema defaults).

    Raises:
        ConfigError: when a file is missing or malformed, or the merged config is invalid.
    """
    config: dict[str, Any] = {}
    for path in (DEFAULT_CONFIG, *overlays):
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        config = deep_merge(config, read_yaml(path, "config file") or {})
    return validate(config)


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
    (``cross.datasets.<name>``) gives its own ``mirror``, ``labelmap``,
    ``exclude`` (unset: none) and ``resample_labels`` (unset: false); the
    registry, the download and extract folders and the download policy are
    shared with the training dataset.

    Args:
        config: The whole validated config.
        name: A dataset name (``dataset.name`` or a key of ``cross.datasets``).

    Returns:
        ``{"name", "registry", "labelmap", "mirror", "download_dir", "extract_dir", "exclude", "download",
        "resample_labels"}``.

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
            "resample_labels": bool(main.get("resample_labels", False)),
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
        "resample_labels": bool(entry.get("resample_labels", False)),
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


def reads_cache(config: Mapping[str, Any], method: str) -> bool:
    """Whether a method's jobs read its frozen encoder's embedding cache (else they encode the images).

    Only a frozen encoder has a cache, and only while ``cache.enabled`` is set.
    """
    return METHODS[method].encoder_frozen and bool(config["cache"]["enabled"])


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
