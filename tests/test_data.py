"""Pipelines: ``VaeDataset`` (decoding in DataLoader workers) and ``Codec.decode_batch(output="torch")``."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch
from conftest import natural_like
from PIL import Image
from torch.utils.data import DataLoader

import vaecodec
from vaecodec.codec import Codec
from vaecodec.data import VaeDataset, find_files

H, W = 16, 24


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    """A tiny random model as a weights file, so every worker loads a model in milliseconds."""
    from vaecodec.model import HyperpriorModel
    from vaecodec.training.export import export

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    export(HyperpriorModel(N=16, M=24).eval(), path, model_id="tiny@1", half=False)
    return str(path)


@pytest.fixture(scope="module")
def codec(tiny_weights) -> Codec:
    return Codec(weights=tiny_weights)


@pytest.fixture(scope="module")
def folder(tmp_path_factory, codec):
    """Six RGB files (two in a subfolder), one grayscale file, and a file that is not .vae."""
    root = tmp_path_factory.mktemp("vae")
    (root / "sub").mkdir()
    names = ["a.vae", "b.vae", "c.vae", "d.vae", "sub/e.vae", "sub/f.vae"]
    datas = codec.encode_batch([natural_like(H, W, seed=i) for i in range(len(names))], quality=40)
    for name, data in zip(names, datas):
        (root / name).write_bytes(data)
    (root / "notes.txt").write_text("not an image")
    return root


def test_find_files_sorts_and_recurses(folder):
    assert [p.relative_to(folder).as_posix() for p in find_files(folder)] == [
        "a.vae", "b.vae", "c.vae", "d.vae", "sub/e.vae", "sub/f.vae"]
    assert len(find_files(folder, recursive=False)) == 4


def test_find_files_names_a_missing_or_empty_folder(tmp_path):
    with pytest.raises(vaecodec.ReadError, match="nowhere: no such folder"):
        find_files(tmp_path / "nowhere")
    with pytest.raises(vaecodec.ReadError, match=r"no \.vae files"):
        find_files(tmp_path)


def test_items_are_the_decoded_files(folder, codec, tiny_weights):
    ds = VaeDataset(folder, weights=tiny_weights)
    assert len(ds) == 6
    x = ds[4]
    assert x.shape == (3, H, W) and x.dtype == torch.float32
    assert torch.equal(x, codec.decode((folder / "sub" / "e.vae").read_bytes(), output="torch"))
    as_numpy = VaeDataset(folder, weights=tiny_weights, output="numpy")[4]
    assert np.array_equal(as_numpy, np.rint(x.permute(1, 2, 0).numpy() * 255).astype(np.uint8))


def flip_and_mean(x: torch.Tensor) -> tuple[torch.Tensor, float]:
    return x.flip(-1), float(x.mean())


def test_transform_is_applied_to_each_item(folder, tiny_weights):
    plain = VaeDataset(folder, weights=tiny_weights)[0]
    flipped, mean = VaeDataset(folder, weights=tiny_weights, transform=flip_and_mean)[0]
    assert torch.equal(flipped, plain.flip(-1)) and mean == pytest.approx(float(plain.mean()))


def test_pil_output_feeds_pil_transforms(folder, tiny_weights):
    ds = VaeDataset(folder, weights=tiny_weights, output="pil", transform=lambda im: im.convert("L"))
    im = ds[1]
    assert isinstance(im, Image.Image) and im.mode == "L" and im.size == (W, H)


def test_default_loader_stacks_a_batch_with_no_workers(folder, tiny_weights):
    ds = VaeDataset(folder, weights=tiny_weights)
    batches = list(DataLoader(ds, batch_size=4, num_workers=0))
    assert [tuple(b.shape) for b in batches] == [(4, 3, H, W), (2, 3, H, W)]
    assert torch.equal(batches[1][0], ds[4])


def decoded_where(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    return x, os.getpid()


def test_workers_decode_with_their_own_models(folder, tiny_weights):
    ds = VaeDataset(folder, weights=tiny_weights, transform=decoded_where)
    expected = torch.stack([ds[i][0] for i in range(len(ds))])  # the parent loads a model first
    loader = DataLoader(ds, batch_size=2, num_workers=2)
    pixels, pids = zip(*[(x, pid) for x, pid in loader])
    assert torch.equal(torch.cat(pixels), expected)
    worker_pids = set(torch.cat(pids).tolist())
    assert len(worker_pids) == 2 and os.getpid() not in worker_pids


def test_a_pickled_dataset_leaves_its_models_behind(folder, tiny_weights):
    ds = VaeDataset(folder, weights=tiny_weights)
    before = len(pickle.dumps(ds))
    ds[0]  # loads a model in this process
    assert len(pickle.dumps(ds)) == before
    assert torch.equal(pickle.loads(pickle.dumps(ds))[0], ds[0])


def test_a_corrupt_file_is_named_in_the_error(tmp_path, folder, tiny_weights):
    data = bytearray((folder / "a.vae").read_bytes())
    data[-6] ^= 0xFF  # a stream byte (the CRC is the last 4)
    (tmp_path / "bad.vae").write_bytes(bytes(data))
    with pytest.raises(vaecodec.ChecksumError, match=r"bad\.vae: corrupt"):
        VaeDataset([tmp_path / "bad.vae"], weights=tiny_weights)[0]


def test_files_name_their_model_by_default(tmp_path, folder):
    (tmp_path / "x.vae").write_bytes((folder / "a.vae").read_bytes())  # made with "tiny@1"
    with pytest.raises(vaecodec.UnknownModelError, match=r"x\.vae: "):
        VaeDataset(tmp_path)[0]


def test_shipped_model_is_used_for_its_files(tmp_path):
    a = natural_like(H, W, seed=9)
    (tmp_path / "s.vae").write_bytes(vaecodec.encode(a, quality=30))
    x = VaeDataset(tmp_path)[0]
    assert torch.equal(x, vaecodec.decode(tmp_path / "s.vae", output="torch"))


# ---------------------------------------------------------------- Codec.decode_batch(output="torch")


def test_decode_batch_torch_is_one_stacked_tensor(codec):
    datas = codec.encode_batch([natural_like(H, W, seed=i) for i in range(3)], quality=50)
    x = codec.decode_batch(datas, output="torch")
    assert isinstance(x, torch.Tensor) and x.shape == (3, 3, H, W) and x.dtype == torch.float32
    assert x.is_contiguous() and x.device.type == "cpu"
    assert torch.equal(x, torch.stack([codec.decode(d, output="torch") for d in datas]))
    assert torch.equal(codec.decode_batch(datas, output="torch", device="cpu"), x)
    numpy = codec.decode_batch(datas)
    assert np.array_equal(np.rint(x.permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8), np.stack(numpy))


def test_decode_batch_torch_mixes_qualities_and_keeps_channels(codec):
    gray = [natural_like(H, W, seed=i, channels=1) for i in range(2)]
    datas = [codec.encode(gray[0], quality=10), codec.encode(gray[1], quality=90)]
    x = codec.decode_batch(datas, output="torch")
    assert x.shape == (2, 1, H, W)
    assert torch.equal(x[1], codec.decode(datas[1], output="torch"))


def test_decode_batch_torch_refuses_sizes_or_channels_that_do_not_stack(codec):
    same = codec.encode(natural_like(H, W))
    taller = codec.encode(natural_like(H + 16, W))
    gray = codec.encode(natural_like(H, W, channels=1))
    with pytest.raises(ValueError, match=r"file 0 is 24x16 RGB, file 2 is 24x32 RGB"):
        codec.decode_batch([same, same, taller], output="torch")
    with pytest.raises(ValueError, match=r"file 1 is 24x16 L"):
        codec.decode_batch([same, gray], output="torch")
    assert [a.shape for a in codec.decode_batch([same, taller])] == [(H, W, 3), (H + 16, W, 3)]  # lists still mix


def test_decode_batch_device_is_for_torch_output_only(codec):
    data = codec.encode(natural_like(H, W))
    with pytest.raises(ValueError, match="device applies to output='torch' only"):
        codec.decode_batch([data], output="numpy", device="cpu")
    with pytest.raises(ValueError, match="at least one file"):
        codec.decode_batch([], output="torch")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_decode_batch_torch_on_cuda(codec):
    datas = codec.encode_batch([natural_like(H, W, seed=i) for i in range(2)])
    x = codec.decode_batch(datas, output="torch", device="cuda")
    assert x.device.type == "cuda" and torch.equal(x.cpu(), codec.decode_batch(datas, output="torch"))
