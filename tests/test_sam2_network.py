"""SAM 2.1 network: state dicts of all four sizes equal the official key/shape lists (strict load),
the synthetic-sam2-v1 weights hash as the manifest says, and bad checkpoints fail in one line."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from track_anything.models.sam2 import network as N
from track_anything.models.synthetic import synthetic_array
from track_anything.tam_blender_addon.errors import WeightsError

MANIFEST = json.loads((Path(__file__).parent / "fixtures" / "sam2" / "manifest.json").read_text())


@pytest.mark.parametrize("size", N.SIZES)
def test_state_dict_keys_and_shapes_equal_the_official_list_in_order(size):
    ours = [(k, list(v.shape), str(v.dtype).replace("torch.", "")) for k, v in N.template_state_dict(size).items()]
    ref = [(e["key"], e["shape"], e["dtype"]) for e in MANIFEST["models"][size]["entries"]]
    assert ours == ref
    n_params = sum(int(np.prod(s)) for k, s, _ in ours if k != "sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix")
    assert n_params == MANIFEST["models"][size]["num_parameters"]


@pytest.mark.parametrize("size", N.SIZES)
def test_strict_load_of_a_manifest_shaped_checkpoint_detects_the_size(size):
    sd = {e["key"]: torch.empty(e["shape"], dtype=torch.float32, device="meta")
          for e in MANIFEST["models"][size]["entries"]}
    net = N.network_from_state_dict(sd, image_size=512)
    assert net.size == size and net.image_size == 512 and net.grid == 32


def test_synthetic_weights_match_the_manifest_sha256_of_every_tiny_tensor():
    bad = []
    for e in MANIFEST["models"]["tiny"]["entries"]:
        arr = synthetic_array(e["key"], tuple(e["shape"]), e["dtype"], "synthetic-sam2-v1")
        if hashlib.sha256(arr.astype("<f4").tobytes()).hexdigest() != e["synthetic_sha256"]:
            bad.append(e["key"])
    assert bad == []
    for key, first3 in MANIFEST["synthetic_spot_values_flat0_3"].items():
        e = next(x for x in MANIFEST["models"]["tiny"]["entries"] if x["key"] == key)
        got = synthetic_array(key, tuple(e["shape"]), e["dtype"], "synthetic-sam2-v1").ravel()[:3]
        np.testing.assert_allclose(got, first3, rtol=1e-6)


def test_a_checkpoint_with_a_missing_or_misshapen_key_fails_with_one_line():
    sd = dict(N.template_state_dict("tiny"))
    sd.pop("no_obj_ptr")
    with pytest.raises(WeightsError, match="1 missing: no_obj_ptr"):
        N.network_from_state_dict(sd)
    sd = dict(N.template_state_dict("tiny"))
    sd["maskmem_tpos_enc"] = torch.empty(6, 1, 1, 64, device="meta")
    with pytest.raises(WeightsError, match="wrong shape"):
        N.network_from_state_dict(sd)
    with pytest.raises(WeightsError, match="not a SAM 2.1 checkpoint"):
        N.network_from_state_dict({"foo": torch.zeros(1)})


def test_image_size_comes_from_the_caller_and_must_be_a_multiple_of_32():
    assert N.empty_network("tiny", 256).sam_prompt_encoder.mask_input_size == (64, 64)
    with pytest.raises(WeightsError, match="multiple of 32"):
        N.empty_network("tiny", 250)


def test_registry_lists_the_four_official_sam2_1_checkpoints():
    from track_anything.models import weights

    for size, name in weights.SAM2_NAMES.items():
        ckpt = weights.CHECKPOINTS[name]
        assert ckpt.kind == "sam2" and ckpt.filename == f"sam2.1_hiera_{size}.pt"
        assert ckpt.url == f"https://dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_{size}.pt"
        assert ckpt.sha256 is None and "recorded on first download" in ckpt.note
