"""XMem state-dict compatibility: manifest keys/shapes/order, strict loading, checkpoint variants, errors."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from track_anything.models.xmem.network import (
    load_network,
    network_from_state_dict,
    synthetic_for_template,
    template_state_dict,
)
from track_anything.tam_blender_addon.errors import WeightsError

MANIFEST = json.loads((Path(__file__).parent / "fixtures" / "xmem" / "manifest.json").read_text())
ENTRIES = MANIFEST["entries"]


def _zeros_like_manifest(entries: list[dict] = ENTRIES) -> dict[str, torch.Tensor]:
    """A checkpoint shaped exactly like the manifest (values do not matter for loading)."""
    return {e["key"]: torch.zeros(e["shape"], dtype=getattr(torch, e["dtype"])) for e in entries}


def test_state_dict_has_the_manifest_keys_shapes_and_dtypes_in_order():
    sd = template_state_dict()
    got = [(k, list(v.shape), str(v.dtype).replace("torch.", "")) for k, v in sd.items()]
    want = [(e["key"], e["shape"], e["dtype"]) for e in ENTRIES]
    assert len(got) == MANIFEST["num_entries"] == 412
    assert got == want


def test_parameter_counts_match_the_manifest():
    net = network_from_state_dict(_zeros_like_manifest())
    per_module = {
        name: sum(p.numel() for p in getattr(net, name).parameters())
        for name in MANIFEST["top_level_modules"]
    }
    assert per_module == MANIFEST["num_parameters_per_top_level_module"]
    assert sum(per_module.values()) == MANIFEST["num_parameters"]


def test_official_layout_checkpoint_file_loads_strictly(tmp_path: Path):
    path = tmp_path / "XMem.pth"
    sd = _zeros_like_manifest()
    sd["decoder.pred.bias"] = torch.tensor([0.25])
    torch.save(sd, path)
    net, label = load_network(path, "cpu")
    assert label == "XMem.pth"
    assert (net.key_dim, net.value_dim, net.hidden_dim) == (64, 512, 64)
    assert float(net.decoder.pred.bias) == 0.25


def test_single_object_checkpoint_gets_a_zero_fifth_channel():
    sd = _zeros_like_manifest()
    four = torch.arange(64 * 4 * 49, dtype=torch.float32).view(64, 4, 7, 7)
    sd["value_encoder.conv1.weight"] = four
    net = network_from_state_dict(sd)
    w = net.value_encoder.conv1.weight
    assert w.shape == (64, 5, 7, 7)
    assert torch.equal(w[:, :4], four)
    assert torch.count_nonzero(w[:, 4]) == 0


def test_hidden_dim_is_read_from_the_checkpoint_and_zero_when_absent():
    dep = MANIFEST["config_dependent"]
    sd = {k: v for k, v in _zeros_like_manifest().items() if k not in dep["hidden_dim_0_removes"]}
    for change in dep["hidden_dim_0_shape_changes"]:
        sd[change["key"]] = torch.zeros(change["shape"])
    net = network_from_state_dict(sd)
    assert net.hidden_dim == 0
    assert net.decoder.hidden_update is None and net.value_encoder.hidden_reinforce is None


def test_checkpoint_with_wrong_keys_raises_one_line_weights_error():
    sd = _zeros_like_manifest()
    sd["decoder.pred.extra"] = sd.pop("decoder.pred.bias")
    sd["key_encoder.bn1.weight"] = torch.zeros(65)
    with pytest.raises(WeightsError) as err:
        network_from_state_dict(sd, "XMem checkpoint broken.pth")
    msg = str(err.value)
    assert "\n" not in msg
    assert "broken.pth" in msg and "decoder.pred.bias" in msg and "decoder.pred.extra" in msg
    assert "key_encoder.bn1.weight" in msg


def test_foreign_checkpoint_file_is_rejected_with_weights_error(tmp_path: Path):
    path = tmp_path / "sam.pth"
    torch.save({"image_encoder.patch_embed.proj.weight": torch.zeros(3)}, path)
    with pytest.raises(WeightsError, match="not an XMem checkpoint"):
        load_network(path, "cpu")
    with pytest.raises(WeightsError, match="not found"):
        load_network(tmp_path / "missing.pth", "cpu")


@pytest.mark.parametrize(
    "key",
    [
        "key_encoder.conv1.weight",
        "key_encoder.bn1.running_var",
        "key_encoder.bn1.num_batches_tracked",
        "value_encoder.fuser.attention.ChannelGate.mlp.1.weight",
        "key_proj.d_proj.bias",
        "decoder.pred.bias",
    ],
)
def test_synthetic_weights_hash_like_the_manifest(key: str):
    template = template_state_dict()
    sd = synthetic_for_template({key: template[key]})
    entry = next(e for e in ENTRIES if e["key"] == key)
    data = sd[key].numpy()
    assert list(data.shape) == entry["shape"]
    assert (
        hashlib.sha256(np.ascontiguousarray(data).astype(data.dtype.newbyteorder("<")).tobytes()).hexdigest()
        == (entry["synthetic_v2_sha256"])
    )


def test_synthetic_spot_values_from_the_readme():
    t = template_state_dict()
    keys = ("key_encoder.conv1.weight", "key_encoder.bn1.running_var", "decoder.pred.bias")
    sd = synthetic_for_template({k: t[k] for k in keys})
    np.testing.assert_allclose(sd[keys[0]].flatten()[:3], [-0.14433224, -0.10900544, -0.01975474], rtol=1e-6)
    np.testing.assert_allclose(sd[keys[1]][:3], [1.2422593, 1.4681671, 1.4679617], rtol=1e-6)
    np.testing.assert_allclose(sd[keys[2]], [-0.09981367], rtol=1e-6)
