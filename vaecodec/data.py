"""Torch data pipelines over ``.vae`` files: a :class:`VaeDataset` that decodes in DataLoader workers.

::

    from torch.utils.data import DataLoader
    from vaecodec.data import VaeDataset

    ds = VaeDataset("train_vae/", transform=random_crop_256)     # item: C×H×W float in [0, 1]
    for batch in DataLoader(ds, batch_size=16, num_workers=4, shuffle=True):
        ...

Every process that reads items loads its own model, on first use: each DataLoader worker
decodes with its own :class:`~vaecodec.Codec` (no model crosses a process boundary; a dataset
pickled to a worker leaves its loaded models behind). Files made with different models (say
``mshc@1`` and ``msh@14``) may share a folder: each file is decoded by the model its header
names. Decoding errors are :class:`~vaecodec.VaecodecError` naming the file.

To decode a whole batch in the main process instead (one synthesis pass, on a GPU), read the
bytes in the workers and call ``Codec.decode_batch(datas, output="torch", device="cuda")``,
which returns one N×C×H×W tensor for same-size images (see ``docs/pipelines.md``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from . import container, image
from .codec import Codec
from .errors import ReadError

EXTENSION = ".vae"


def find_files(root: str | os.PathLike[str], *, recursive: bool = True) -> list[Path]:
    """The ``.vae`` files under ``root`` (in its subfolders too when ``recursive``), sorted by path.

    Raises :class:`ReadError` when ``root`` is not a folder or holds no ``.vae`` file.
    """
    folder = Path(root)
    if not folder.is_dir():
        msg = f"{folder}: no such folder" if not folder.exists() else f"{folder}: is not a folder"
        raise ReadError(msg)
    found = folder.rglob(f"*{EXTENSION}") if recursive else folder.glob(f"*{EXTENSION}")
    files = sorted(p for p in found if p.is_file())
    if not files:
        msg = f"{folder}: no {EXTENSION} files{' (subfolders included)' if recursive else ''}"
        raise ReadError(msg)
    return files


class VaeDataset(Dataset[Any]):
    """A folder (or a list) of ``.vae`` files; item ``i`` is file ``i`` decoded, then transformed.

    Args:
        root: a folder (searched by :func:`find_files`) or a sequence of file paths.
        transform: called on each decoded image (torchvision transforms take the "torch" and
            "pil" outputs); its result is the item.
        output: "torch" (default: C×H×W float32 in [0, 1], C = 1, 2, 3 or 4 as the file's
            pixel format), "pil" (with the file's ICC profile in ``info``) or "numpy" (H×W[×C] uint8).
        recursive: with a folder, include its subfolders (default).
        device: where each process's model runs ("cpu" in DataLoader workers; "cuda" when
            decoding in the main process).
        weights: a ``.safetensors`` file of a fine-tuned model to decode every file with
            (default: the model each file's header names).
        deterministic: decode in float64 (:class:`~vaecodec.Codec`).
    """

    def __init__(
        self, root: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], *,
        transform: Callable[[Any], Any] | None = None, output: str = "torch", recursive: bool = True,
        device: str = "cpu", weights: str | None = None, deterministic: bool = False,
    ) -> None:
        if output not in image.OUTPUTS:
            msg = f"output must be one of {image.OUTPUTS}, got {output!r}"
            raise ValueError(msg)
        if isinstance(root, (str, os.PathLike)):
            self.files = find_files(root, recursive=recursive)
        else:
            self.files = [Path(p) for p in root]
        self.transform = transform
        self.output = output
        self.device = device
        self.weights = weights
        self.deterministic = deterministic
        self._codecs: dict[str, Codec] = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Any:
        path = self.files[index]
        data = container.read_source(path)
        with container.naming(path):
            codec = self.codec_for(container.read_header(data).model_id)
            decoded = codec.decode(data, output=self.output)
        return self.transform(decoded) if self.transform is not None else decoded

    def codec_for(self, model_id: str) -> Codec:
        """This process's codec for files of ``model_id``, loaded on first use."""
        if self._pid != os.getpid():  # a forked worker: load its own models
            self._codecs, self._pid = {}, os.getpid()
        key = "weights" if self.weights else model_id
        if key not in self._codecs:
            self._codecs[key] = Codec(
                None if self.weights else model_id, device=self.device, weights=self.weights,
                deterministic=self.deterministic,
            )
        return self._codecs[key]

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_codecs"] = {}  # a worker started by pickling (spawn) loads its own models
        return state

