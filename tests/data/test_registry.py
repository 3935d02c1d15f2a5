"""Tests of the dataset registry (config/datasets.yaml, segsam.data.registry) and its label maps."""

from __future__ import annotations

import copy
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import SimpleITK as sitk
import yaml

from segsam.config import check_names, deep_merge, registry_names
from segsam.data.registry import DEFAULT_REGISTRY, CasesNotReady, RemoteFile, load_registry
from segsam.data.vocabulary import LabelMap, Vocabulary
from segsam.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
REGISTRY = REPO / "config" / "datasets.yaml"
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
EXPECTED = {
    "sa_med2d_16m",
    "kits23",
    "btcv",
    "amos",
    "totalseg_example",
    "chaos_t2",
    "demo",
    "local",
    "local_totalseg",
    "nnunet",
}


@pytest.fixture(scope="module")
def registry():
    return load_registry(REGISTRY)


@pytest.fixture(scope="module")
def vocab() -> Vocabulary:
    return Vocabulary.read(REPO / "config" / "vocabulary.csv")


def _raw() -> dict[str, Any]:
    return yaml.safe_load(REGISTRY.read_text(encoding="utf-8"))


def _write(tmp_path: Path, raw: dict[str, Any]) -> Path:
    path = tmp_path / "config" / "datasets.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def _load(tmp_path: Path, raw: dict[str, Any]):
    return load_registry(_write(tmp_path, raw), base=REPO)


# --- the project's registry ----------------------------------------------------------------------


def test_registry_has_every_dataset_with_its_metadata(registry) -> None:
    assert set(registry.names) == EXPECTED
    for name in EXPECTED:
        spec = registry.get(name)
        assert spec.description and spec.licence
        if spec.kind in ("volumes", "slices2d"):
            assert spec.citation and spec.homepage
        for file in spec.files.values():
            assert (file.url is None) != (file.manual is None)
            assert file.url is None or file.url.startswith("https://")


def test_every_registry_name_is_a_valid_config_value(registry, config) -> None:
    """The registry is the one list of dataset names: the schema does not repeat it."""
    schema = yaml.safe_load(SCHEMA.read_text(encoding="utf-8"))
    assert "enum" not in schema["properties"]["dataset"]["properties"]["name"]
    assert "propertyNames" not in schema["properties"]["cross"]["properties"]["datasets"]
    assert registry_names(DEFAULT_REGISTRY) == registry.names
    # cross datasets: the volume datasets the download stage serves
    volumes = [name for name in registry.names if registry.get(name).kind in ("volumes", "local")]
    for name in registry.names:
        check_names(deep_merge(config, {"dataset": {"name": name}, "cross": {"datasets": dict.fromkeys(volumes)}}))


def test_every_label_map_loads_into_the_vocabulary(registry, vocab: Vocabulary) -> None:
    paths = {spec.labelmap for spec in registry.datasets.values() if spec.labelmap}
    paths |= {
        c.labelmap for name in ("totalseg_example", "kits23", "btcv") for c in registry.get(name).cases().values()
    }
    for path in paths:
        LabelMap.read(REPO / path, vocab)


def test_totalseg_example_cases_have_their_own_label_maps(registry) -> None:
    cases = registry.get("totalseg_example").cases()
    assert list(cases) == ["s0001", "s0002"]
    ct, mr = cases["s0001"], cases["s0002"]
    assert (ct.modality, ct.image.file.path, ct.label.file.path, ct.labelmap) == (
        "ct",
        "totalsegmentator/example_ct.nii.gz",
        "totalsegmentator/example_seg_fast_force_split.nii.gz",
        "config/labelmaps/totalseg_total.json",
    )
    assert (mr.modality, mr.image.file.path, mr.label.file.path, mr.labelmap) == (
        "mr",
        "totalsegmentator/example_mr_sm.nii.gz",
        "totalsegmentator/example_seg_mr.nii.gz",
        "config/labelmaps/totalseg_total_mr.json",
    )


def test_totalseg_checksums_match_the_shared_data_readme(registry, shared_data: Path) -> None:
    readme = (shared_data / "README.md").read_text(encoding="utf-8")
    published = dict(re.findall(r"^\| (totalsegmentator/\S+) \|.*\| ([0-9a-f]{64}) \|$", readme, flags=re.M))
    files = registry.get("totalseg_example").files
    assert set(published) == set(files)
    for path, digest in published.items():
        assert files[path].sha256 == digest


def test_labelmap_override_applies_to_every_case(registry) -> None:
    cases = registry.get("totalseg_example").cases(labelmap="config/labelmaps/demo.json")
    assert {c.labelmap for c in cases.values()} == {"config/labelmaps/demo.json"}


def test_kits23_cases_follow_the_official_training_list(registry) -> None:
    spec = registry.get("kits23")
    cases = spec.cases()
    assert len(cases) == 489
    assert "case_00299" in cases and "case_00400" in cases and "case_00588" in cases
    assert "case_00300" not in cases and "case_00589" not in cases
    case = cases["case_00007"]
    assert case.image.file.url == "https://kits19.sfo2.digitaloceanspaces.com/master_00007.nii.gz"
    assert case.label.file.path == "kits23/case_00007/segmentation.nii.gz"
    assert len(spec.all_files(cases)) == 2 * 489


def test_btcv_is_manual_and_comes_from_its_archive(registry) -> None:
    spec = registry.get("btcv")
    assert "Synapse" in spec.manual and "syn3193805" in spec.manual
    cases = spec.cases()
    assert len(cases) == 30 and "btcv_0010" in cases and "btcv_0011" not in cases and "btcv_0040" in cases
    case = cases["btcv_0021"]
    assert case.image.file.path == "btcv/RawData.zip" and case.image.file.url is None
    assert case.label.member == "RawData/Training/label/label0021.nii.gz"


def _amos_zip(root: Path, numbers: dict[str, list[int]]) -> Path:
    path = root / "amos" / "amos22.zip"
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        for part, ns in numbers.items():
            for n in ns:
                archive.writestr(f"amos22/images{part}/amos_{n:04d}.nii.gz", "x")
                archive.writestr(f"amos22/labels{part}/amos_{n:04d}.nii.gz", "x")
        archive.writestr("amos22/imagesTs/amos_0999.nii.gz", "x")  # unlabelled test case: not a case
    return path


def test_amos_case_list_waits_for_its_archive(registry, tmp_path: Path) -> None:
    with pytest.raises(CasesNotReady, match="amos/amos22.zip.*fetch_archives"):
        registry.get("amos").cases([tmp_path])


def test_amos_cases_are_discovered_from_the_archive(registry, tmp_path: Path) -> None:
    _amos_zip(tmp_path, {"Tr": [1, 5, 507], "Va": [8, 600]})
    cases = registry.get("amos").cases([tmp_path / "nothing", tmp_path])
    assert list(cases) == ["amos_0001", "amos_0005", "amos_0008", "amos_0507", "amos_0600"]
    assert {c: s.modality for c, s in cases.items()} == {
        "amos_0001": "ct",
        "amos_0005": "ct",
        "amos_0008": "ct",
        "amos_0507": "mr",
        "amos_0600": "mr",
    }
    assert cases["amos_0008"].image.member == "amos22/imagesVa/amos_0008.nii.gz"
    assert cases["amos_0001"].labelmap == "config/labelmaps/amos.json"


def test_amos_cases_from_an_extracted_folder(registry, tmp_path: Path) -> None:
    folder = tmp_path / "amos" / "amos22.zip" / "amos22" / "labelsTr"
    folder.mkdir(parents=True)
    (folder / "amos_0042.nii.gz").write_text("x")
    assert list(registry.get("amos").cases([tmp_path])) == ["amos_0042"]


def test_local_cases_come_from_the_mirror_layout(registry, tmp_path: Path) -> None:
    for modality, case in (("ct", "p1"), ("mr", "p2")):
        (tmp_path / modality).mkdir(exist_ok=True)
        (tmp_path / modality / f"{case}_image.nii.gz").write_text("x")
        (tmp_path / modality / f"{case}_label.nii.gz").write_text("x")
    spec = registry.get("local")
    cases = spec.cases([tmp_path], labelmap="config/labelmaps/demo.json")
    assert {c: s.modality for c, s in cases.items()} == {"p1": "ct", "p2": "mr"}
    assert cases["p1"].image.file.path == "ct/p1_image.nii.gz"
    with pytest.raises(ConfigError, match="set dataset.labelmap"):
        spec.cases([tmp_path])
    with pytest.raises(ConfigError, match="dataset.mirror"):
        spec.cases([], labelmap="config/labelmaps/demo.json")


def test_local_case_without_label_is_named(registry, tmp_path: Path) -> None:
    (tmp_path / "ct").mkdir()
    (tmp_path / "ct" / "p1_image.nii.gz").write_text("x")
    with pytest.raises(ConfigError, match="ct/p1"):
        registry.get("local").cases([tmp_path], labelmap="config/labelmaps/demo.json")


def test_unknown_dataset_names_the_known_ones(registry) -> None:
    with pytest.raises(ConfigError, match="'nope' is not in the registry.*kits23"):
        registry.get("nope")


# --- label maps of the real datasets ---------------------------------------------------------------


def _names(path: str, vocab: Vocabulary) -> dict[int, str | None]:
    labelmap = LabelMap.read(REPO / path, vocab)
    return {value: None if cid is None else vocab.name_of(cid) for value, cid in labelmap.mapping.items()}


def test_kits23_btcv_amos_label_maps(vocab: Vocabulary) -> None:
    assert _names("config/labelmaps/kits23.json", vocab) == {1: "kidney", 2: "kidney_tumor", 3: "kidney_cyst"}
    btcv = _names("config/labelmaps/btcv.json", vocab)
    assert (
        len(btcv) == 13
        and btcv[1] == "spleen"
        and btcv[10] == "portal_vein_and_splenic_vein"
        and btcv[13] == "adrenal_gland_left"
    )
    amos = _names("config/labelmaps/amos.json", vocab)
    assert len(amos) == 15 and amos[10] == "pancreas" and amos[13] == "duodenum" and amos[14] == "urinary_bladder"
    assert amos[15] == "prostate_uterus"


@pytest.mark.shared_data
def test_amos_label_map_covers_the_real_amos_label(shared_data: Path, vocab: Vocabulary) -> None:
    values = np.unique(sitk.GetArrayFromImage(sitk.ReadImage(str(shared_data / "amos" / "amos_0013_label.nii.gz"))))
    lut = LabelMap.read(REPO / "config" / "labelmaps" / "amos.json", vocab).lookup_table(
        values, where="amos_0013_label.nii.gz"
    )
    assert set(np.nonzero(lut[values])[0]) == set(range(1, 16))


# --- malformed registries: one line naming the file and the key ------------------------------------


def _mutate(keys: tuple[str, ...], value: Any) -> dict[str, Any]:
    raw = copy.deepcopy(_raw())
    node: Any = raw
    for key in keys[:-1]:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if value is _DELETE:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value
    return raw


_DELETE = object()
TS = ("datasets", "totalseg_example")
CT = "totalsegmentator/example_ct.nii.gz"

BAD = {
    "unknown-key": ((*TS, "colour"), "blue", "unknown key 'colour'"),
    "missing-key": ((*TS, "licence"), _DELETE, "missing key 'licence'"),
    "bad-kind": ((*TS, "kind"), "spreadsheet", "kind: 'spreadsheet'"),
    "bad-sha256": ((*TS, "files", CT, "sha256"), "abc", "sha256 must be 64"),
    "url-and-manual": ((*TS, "files", CT, "manual"), "also by hand", "exactly one of 'url' and 'manual'"),
    "ftp-url": ((*TS, "files", CT, "url"), "ftp://x/y", "must start with http"),
    "unknown-file-key": ((*TS, "files", CT, "md5"), "x", "unknown key 'md5'"),
    "case-unknown-file": (
        (*TS, "cases", "s0001", "image"),
        "nope.nii.gz",
        "'nope.nii.gz' is not one of the dataset's files",
    ),
    "case-bad-modality": ((*TS, "cases", "s0001", "modality"), "CT scan", "modality 'CT scan'"),
    "missing-labelmap": ((*TS, "cases", "s0001", "labelmap"), "config/labelmaps/nope.json", "nope.json not found"),
    "labelmap-dotdot": ((*TS, "labelmap"), "../x.json", "without '..'"),
    "member-not-archive": (
        (*TS, "cases", "s0001", "image"),
        {"archive": CT, "member": "a.nii.gz"},
        "not marked 'archive: true'",
    ),
    "bad-range": (
        (
            "datasets",
            "kits23",
            "case_sets",
            "0",
            "numbers",
        ),
        [[5, 1]],
        "not a [first, last] range",
    ),
    "bad-template": (
        (
            "datasets",
            "kits23",
            "case_sets",
            "0",
            "id",
        ),
        "case_{m}",
        "must use only {n}",
    ),
    "bad-case-id": (
        (
            "datasets",
            "kits23",
            "case_sets",
            "0",
            "id",
        ),
        "case {n}",
        "may hold only letters",
    ),
    "discover-without-archive": (
        (
            "datasets",
            "kits23",
            "case_sets",
            "0",
            "numbers",
        ),
        "discover",
        "needs an 'archive'",
    ),
    "two-modalities": (
        (
            "datasets",
            "kits23",
            "case_sets",
            "0",
            "modality_by_number",
        ),
        {"ct": [[0, 10]]},
        "exactly one of 'modality'",
    ),
    "bad-unknown-classes": (
        (
            "datasets",
            "sa_med2d_16m",
            "release",
            "unknown_classes",
        ),
        "maybe",
        "'error' or 'skip'",
    ),
    "bad-version": (("version",), 2, "version: expected 1"),
}


@pytest.mark.parametrize(("path", "value", "message"), list(BAD.values()), ids=list(BAD))
def test_malformed_registry_is_one_line_naming_the_key(
    tmp_path: Path, path: tuple[str, ...], value: Any, message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, _mutate(path, value))
    text = str(info.value)
    assert "datasets.yaml" in text and message in text and "\n" not in text


def test_duplicate_case_ids_are_named(tmp_path: Path) -> None:
    raw = _raw()
    raw["datasets"]["totalseg_example"]["case_sets"] = [
        {
            "id": "s{n:04d}",
            "numbers": [[1, 1]],
            "modality": "ct",
            "image": {"path": "a/{n}.nii.gz", "url": "https://example.org/{n}"},
            "label": {"path": "b/{n}.nii.gz", "url": "https://example.org/l{n}"},
        }
    ]
    with pytest.raises(ConfigError, match="case 's0001' is listed twice"):
        _load(tmp_path, raw).get("totalseg_example").cases()


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "datasets.yaml"
    path.write_text("version: 1\ndatasets:\n  x: {kind: [\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"datasets.yaml: cannot read the dataset registry \(line \d+"):
        load_registry(path)


def test_missing_registry_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nope.yaml: cannot read"):
        load_registry(tmp_path / "nope.yaml")


@pytest.mark.parametrize("path", ["/abs/x.nii.gz", "a/../x.nii.gz", "a\\x.nii.gz", "", "a//b"])
def test_remote_file_paths_must_be_clean(path: str) -> None:
    with pytest.raises(ConfigError):
        RemoteFile(path, url="https://example.org/x")
