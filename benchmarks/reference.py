"""CompressAI's published Kodak RD curves, read from ``<repo>/../shared/reference/compressai-kodak``.

These files are verbatim copies of CompressAI's ``results/image/kodak/*.json`` (see the
folder's ``PROVENANCE.md``). Two differences from our own measurements, stated in the
report: their bpp counts only the entropy-coded strings (no file header), and their PSNR
and MS-SSIM are measured on float reconstructions, not on 8-bit decoded images.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from .env import REPO_ROOT
from .metrics import ms_ssim_db
from .rd import Curve

DEFAULT_DIR = REPO_ROOT.parent / "shared" / "reference" / "compressai-kodak"

#: file stem → label. The mean-scale hyperprior (mbt2018-mean) is vaecodec's architecture;
#: the scale hyperprior (bmshj2018-hyperprior) is its predecessor.
DEFAULT_REFERENCES: dict[str, str] = {
    "compressai-bmshj2018-hyperprior_mse_cuda": "CompressAI bmshj2018-hyperprior (MSE, published)",
    "compressai-mbt2018-mean_mse_cuda": "CompressAI mbt2018-mean (MSE, published)",
}


def load_reference(path: Path, label: str | None = None) -> Curve:
    """One CompressAI results JSON (``{"name", "results": {"bpp", "psnr-rgb", "ms-ssim-rgb"}}``)."""
    doc = json.loads(Path(path).read_text())
    res = doc["results"]
    b = [float(x) for x in res["bpp"]]
    p = [float(x) for x in res.get("psnr-rgb", [math.nan] * len(b))]
    m = [float(x) for x in res.get("ms-ssim-rgb", [math.nan] * len(b))]
    if not (len(b) == len(p) == len(m)):
        msg = f"{path}: bpp, psnr-rgb and ms-ssim-rgb have different lengths"
        raise ValueError(msg)
    name = "ref:" + Path(path).stem
    return Curve(name=name, label=label or f"{doc.get('name', name)} (published)", kind="reference",
                 bpp=b, psnr=p, ms_ssim=m, ms_ssim_db=[ms_ssim_db(v) for v in m],
                 source=f"{Path(path).parent.name}/{Path(path).name}: {doc.get('description', '')}".strip())


def load_references(folder: Path = DEFAULT_DIR,
                    stems: dict[str, str] | None = None) -> tuple[dict[str, Curve], str | None]:
    """The chosen reference curves that exist; the second item says why some are missing."""
    stems = DEFAULT_REFERENCES if stems is None else stems
    folder = Path(folder)
    if not folder.is_dir():
        return {}, f"reference folder not found: {folder}"
    curves: dict[str, Curve] = {}
    missing = []
    for stem, label in stems.items():
        path = folder / f"{stem}.json"
        if path.is_file():
            c = load_reference(path, label)
            curves[c.name] = c
        else:
            missing.append(path.name)
    return curves, (f"missing in {folder}: {', '.join(missing)}" if missing else None)
