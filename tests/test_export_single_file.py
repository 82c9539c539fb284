"""Single checkpoint file (.safetensors, original LDM layout) through diffusers' from_single_file."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("diffusers")
ort = pytest.importorskip("onnxruntime")

from export_fixtures import TINY_ATTN_RES, TINY_IMAGE_SIZE, tiny_sd, write_ldm_checkpoint  # noqa: F401

from walkcut.cli import main


def test_single_file_matches_folder(tiny_sd, tmp_path):  # noqa: F811
    import torch
    from walkcut.export.loading import load_components

    ckpt = write_ldm_checkpoint(tiny_sd, tmp_path / "tiny.safetensors")
    from_file = load_components(str(ckpt), arch="tiny")
    from_folder = load_components(str(tiny_sd))
    assert from_file.source == "file" and from_file.arch == "tiny"
    for a, b in ((from_file.unet, from_folder.unet), (from_file.vae, from_folder.vae)):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys()
        for k in sa:
            torch.testing.assert_close(sa[k], sb[k], rtol=0, atol=0, msg=k)
    # the embedding from our tokenizer facts equals the one from the real tokenizer
    torch.testing.assert_close(from_file.prompt_embedding, from_folder.prompt_embedding)

    out = tmp_path / "file.onnx"
    args = ["--image-size", str(TINY_IMAGE_SIZE), "--attn-res", str(TINY_ATTN_RES), "--no-progress"]
    assert main(["export", "--model", str(ckpt), "--arch", "tiny", "--out", str(out), *args]) == 0
    image = np.random.default_rng(0).uniform(-1, 1, (1, 3, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE)).astype(np.float32)
    got = ort.InferenceSession(str(out)).run(None, {"image": image})[0]
    np.testing.assert_allclose(got.sum(-1), 1.0, atol=1e-5)
