"""The model card ``assets/MODEL.md`` of the shipped weights (issue 3, item 3).

``python -m benchmarks.model_card --log RUN/log.jsonl --results benchmarks/results/kodak
--weights vaecodec/weights/msh-N.safetensors --out assets/
--notes assets/model-card-notes.json`` writes into ``--out``:

* ``training-log.jsonl``: a compact copy of the training log (every validation record, train
  records thinned to the first one of each ``--every``-step bucket plus the latest), merged
  with the copy already there (a run resumed on another machine starts a new log): ordered by step, one
  record per (step, kind), the newer source winning;
* ``figures/training-curve.png``: train loss, bpp and PSNR against step (smoothed) with the
  validation bpp and PSNR per level, drawn from that merged file;
* ``figures/rd-kodak.png``: the PSNR plot of the benchmark results (copied, or drawn from
  ``results.json`` when the PNG is absent);
* ``MODEL.md``: architecture, weights, data, training setup, validation, the RD table and the
  BD-rates read from ``results.json``, targets against what was achieved, and the commands.

Every figure comes from one of these inputs (the log, the optional checkpoint's config, the
results, the weights, the training folder, the ``--notes`` JSON); what none of them gives is
written as "not measured" or "not recorded". ``--notes`` is a JSON object whose keys override
what is derived: ``hardware``, ``steps``, ``wall_clock_hours``, ``batch_size``, ``patch_size``,
``lr``, ``precision``, ``processes``, ``weights_from`` (which checkpoint was exported) and
``remarks`` (a string or a list of strings); other keys are listed as they are.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .env import REPO_ROOT, cpu_name

CARD_NAME = "MODEL.md"
LOG_NAME = "training-log.jsonl"
#: Figures go in a subfolder so that ``assets/`` itself holds only the sample photos (the
#: benchmark's default dataset).
CURVE_PNG = "figures/training-curve.png"
RD_PNG = "figures/rd-kodak.png"
NOT_MEASURED = "not measured"
NOT_RECORDED = "not recorded"

HYPERPRIOR = "ref:compressai-bmshj2018-hyperprior_mse_cuda"
MEAN_SCALE = "ref:compressai-mbt2018-mean_mse_cuda"
#: (curve name in results.json, label) of the curves the card compares vaecodec with.
COMPARED: tuple[tuple[str, str], ...] = (
    ("jpeg-420", "Pillow JPEG 4:2:0 (optimize=True)"),
    ("webp", "Pillow WebP"),
    ("avif-420", "Pillow AVIF 4:2:0"),
    (HYPERPRIOR, "CompressAI bmshj2018-hyperprior (MSE, published)"),
    (MEAN_SCALE, "CompressAI mbt2018-mean (MSE, published)"),
)
#: The project's targets: BD-rate (PSNR-RGB, %) of vaecodec against the anchor, at most this.
#: JPEG's is the first generation's (issue 3); AVIF's and CompressAI's the second's (issue 28).
TARGETS: dict[str, float] = {"jpeg-420": -40.0, "avif-420": 0.0, HYPERPRIOR: 10.0}
KODAK_CMD = "python -m benchmarks --dataset ../shared/datasets/kodak --out benchmarks/results/kodak"
_TABLES = ("_quantized_cdf", "_offset", "_cdf_length", "scale_table")
_KIND_ORDER = {"train": 0, "val": 1}


# ----------------------------------------------------------------------------- the log


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a JSON-lines file, skipping blank and unparsable lines (one being written)."""
    out = []
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


def record_kind(rec: dict[str, Any]) -> str:
    """``"val"``, ``"train"`` or, for any other record, its sorted keys."""
    if "val" in rec:
        return "val"
    if "loss" in rec:
        return "train"
    return ",".join(sorted(k for k in rec if k != "step"))


def compact_log(records: Iterable[dict[str, Any]], every: int = 100) -> list[dict[str, Any]]:
    """One record per (step, kind), the later one winning; train records thinned to ~1 per ``every`` steps.

    A train record is kept when it is the first (lowest step) of its ``step // every`` bucket,
    or the latest train record; so compacting a compacted log merged with the full log gives
    the same records again. The result is sorted by step (train before val at the same step).
    """
    latest: dict[tuple[int, str], dict[str, Any]] = {}
    for rec in records:
        step = rec.get("step")
        if isinstance(step, bool) or not isinstance(step, int):
            continue
        latest[(step, record_kind(rec))] = rec
    train_steps = sorted(s for s, k in latest if k == "train")
    keep: set[int] = set(train_steps[-1:])
    seen: set[int] = set()
    for s in train_steps:
        if s // every not in seen:
            seen.add(s // every)
            keep.add(s)
    out = [(key, rec) for key, rec in latest.items() if key[1] != "train" or key[0] in keep]
    out.sort(key=lambda kr: (kr[0][0], _KIND_ORDER.get(kr[0][1], 2), kr[0][1]))
    return [rec for _, rec in out]


def write_jsonl(path: Path, records: Sequence[dict[str, Any]]) -> None:
    """Records as JSON lines (written to a temporary file, then renamed)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
    os.replace(tmp, path)


def merge_logs(existing: Path | None, new: Sequence[dict[str, Any]],
               every: int = 100) -> list[dict[str, Any]]:
    """The compact log of ``existing`` (if the file exists) followed by ``new`` (which wins on duplicates)."""
    old = read_jsonl(existing) if existing is not None and existing.is_file() else []
    return compact_log([*old, *new], every)


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def run_facts(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Steps, cumulative time, patch-size phases, learning rates and validations of a (compact) log."""
    train = [r for r in records if record_kind(r) == "train"]
    vals = [r for r in records if record_kind(r) == "val" and isinstance(r.get("val"), dict)]
    # "partial": a record that averaged fewer steps than it divided by (a logging bug before
    # commit e21ecde, in the first record after a resume); kept in the log, left off the curves
    facts: dict[str, Any] = {"train": train, "vals": vals, "curve": [r for r in train if not r.get("partial")],
                             "steps": max((r["step"] for r in records), default=None)}
    last = train[-1] if train else None
    facts["last_train"] = last
    facts["seconds"] = last.get("time") if last and _finite(last.get("time")) else None
    phases: list[list[Any]] = []  # [patch, first step, last step]
    for r in train:
        p = r.get("patch")
        if phases and phases[-1][0] == p:
            phases[-1][2] = r["step"]
        else:
            phases.append([p, r["step"], r["step"]])
    facts["patch_phases"] = [tuple(ph) for ph in phases if ph[0] is not None]
    lrs = [r["lr"] for r in train if _finite(r.get("lr"))]
    facts["lr_max"] = max(lrs) if lrs else None
    facts["lr_last"] = lrs[-1] if lrs else None
    facts["best_val"] = best_validation(vals)
    return facts


def _objective(v: dict[str, Any]) -> float | None:
    """The value a validation record was ranked by: its weighted objective, else its score."""
    val = v["val"]
    obj = val.get("objective", val.get("score"))
    return obj if _finite(obj) else None


def _objective_kind(v: dict[str, Any]) -> tuple[Any, ...]:
    """What makes two records' objectives comparable: the ladder and the level balance.

    Records from before the balance was logged carry no ``level_balance``; a weighted
    objective that differs from the plain score tells that some balance was on.
    """
    val = v["val"]
    bal = v.get("level_balance")
    if bal is None:
        obj, score = val.get("objective"), val.get("score")
        weighted = _finite(obj) and _finite(score) and not math.isclose(obj, score, rel_tol=1e-9)
        bal = "weighted" if weighted else 0.0
    elif bal:
        bal = "weighted"
    return tuple(v.get("lambdas") or ()), bal


def best_validation(vals: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The validation the run kept as best.pt: the lowest objective since the objective last changed.

    Training picks best.pt by the weighted objective and starts over when the ladder or the
    level balance changes; records of an earlier objective do not compare with the last one's.
    """
    ranked = [v for v in vals if _objective(v) is not None]
    if not ranked:
        return None
    kind = _objective_kind(ranked[-1])
    same = [v for v in ranked if _objective_kind(v) == kind]
    return min(same, key=_objective)


# ----------------------------------------------------------------------------- inputs


def load_results(folder: Path | None) -> dict[str, Any] | None:
    """``results.json`` of a benchmark run, or None."""
    if folder is None or not (Path(folder) / "results.json").is_file():
        return None
    return json.loads((Path(folder) / "results.json").read_text())


def lambda_at_level(level: float, lambdas: Sequence[float]) -> float:
    """λ at a continuous level, log-linearly interpolated (as ``vaecodec.model.lambda_at``)."""
    lo = min(int(math.floor(level)), len(lambdas) - 2)
    t = level - lo
    return math.exp((1 - t) * math.log(lambdas[lo]) + t * math.log(lambdas[lo + 1]))


#: The ladder of validation records written before the log stored one (``"lambdas"``):
#: CompressAI's eight λ values, which the first runs trained on.
FIRST_LADDER = (0.0018, 0.0035, 0.0067, 0.0130, 0.0250, 0.0483, 0.0932, 0.1800)


def val_by_lambda(rec: dict[str, Any]) -> dict[float, dict[str, Any]]:
    """A validation record's per-level results keyed by their λ (levels move when the ladder grows)."""
    ladder = rec.get("lambdas") or FIRST_LADDER
    return {round(lambda_at_level(float(k), ladder), 6): v for k, v in rec["val"].items()
            if k != "score" and isinstance(v, dict)}


def bd_entry(results: dict[str, Any], anchor: str, metric: str = "psnr") -> dict[str, Any] | None:
    """BD-rate (%) of vaecodec against ``anchor`` from ``results["bd_rate"]``, or None when absent.

    The benchmark stores rows "codec vs anchor" with measured anchors only; the rows of a
    reference curve are therefore "reference vs vaecodec" and are inverted here: over the same
    overlap the mean ln-rate difference only changes sign, so x becomes 1/(1+x) − 1 exactly.
    """
    rows = results.get("bd_rate") or []
    for r in rows:
        if r.get("codec") == "vaecodec" and r.get("anchor") == anchor and r.get("metric") == metric:
            return {"value": r.get("bd_rate_pct"), "lo": r.get("overlap_lo"), "hi": r.get("overlap_hi"),
                    "how": "direct"}
    for r in rows:
        if r.get("codec") == anchor and r.get("anchor") == "vaecodec" and r.get("metric") == metric:
            v = r.get("bd_rate_pct")
            inv = None if v is None else 100.0 * (1.0 / (1.0 + v / 100.0) - 1.0)
            return {"value": inv, "lo": r.get("overlap_lo"), "hi": r.get("overlap_hi"), "how": "inverted"}
    return None


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def weights_facts(path: Path) -> dict[str, Any]:
    """Metadata, sha256 (of the file and in the manifest), size and parameter count of a weights file."""
    from safetensors import safe_open

    path = Path(path)
    facts: dict[str, Any] = {"path": path, "size": path.stat().st_size, "sha256": sha256_file(path)}
    params, dtypes = 0, set()
    with safe_open(str(path), "pt") as f:
        facts["metadata"] = dict(f.metadata() or {})
        for k in f.keys():  # noqa: SIM118 (safe_open has no __iter__)
            if k.endswith(_TABLES):
                continue
            sl = f.get_slice(k)
            params += math.prod(sl.get_shape())
            dtypes.add(str(sl.get_dtype()))
    facts["params"], facts["dtypes"] = params, sorted(dtypes)
    manifest = path.parent / "manifest.json"
    facts["manifest_sha256"] = None
    if manifest.is_file():
        for entry in json.loads(manifest.read_text()).get("models", {}).values():
            if entry.get("filename") == path.name:
                facts["manifest_sha256"] = entry.get("sha256")
    return facts


def weights_changed_since(commit: str | None, weights: Path) -> bool | None:
    """Whether ``weights`` differs between ``commit`` and the working tree (None: cannot tell)."""
    if not commit:
        return None
    commit = commit.removesuffix("-dirty")
    try:
        cmd = ["git", "-C", str(REPO_ROOT), "diff", "--quiet", commit, "--", str(weights.resolve())]
        rc = subprocess.run(cmd, capture_output=True, timeout=20, check=False).returncode
    except (OSError, subprocess.SubprocessError):
        return None
    return {0: False, 1: True}.get(rc)


def training_data_facts(folder: Path, val_fraction: float) -> dict[str, Any] | None:
    """Image count, sizes and the train/validation split of the training folder (None if absent)."""
    from PIL import Image

    from vaecodec.training.loop import list_images, split_train_val

    if not Path(folder).is_dir():
        return None
    files = list_images(folder)
    train, val = split_train_val(files, val_fraction)
    sizes = []
    for p in files:
        with Image.open(p) as im:
            sizes.append(im.size)
    short = sorted(min(s) for s in sizes)
    return {"count": len(files), "train": len(train), "val": [p.name for p in val],
            "k": max(2, round(1 / val_fraction)) if val else None,
            "megapixels": sum(w * h for w, h in sizes) / 1e6, "short_min": short[0], "short_max": short[-1],
            "short_512": sum(1 for s in short if s == 512),
            "kodak_names": [p.name for p in files if p.stem.lower().startswith("kodim")]}


def read_checkpoint_info(path: Path) -> dict[str, Any]:
    """``config``, ``step``, ``elapsed``, ``world`` and ``best`` of a training checkpoint."""
    import torch

    ck = torch.load(path, map_location="cpu", weights_only=False)
    return {k: ck.get(k) for k in ("config", "step", "elapsed", "world", "best")}


def hardware_string() -> str:
    """CPU model name and logical CPU count of this machine."""
    return f"{cpu_name()}, {os.cpu_count()} logical CPUs"


# ----------------------------------------------------------------------------- figures


def _smooth(ys: Sequence[float], k: int) -> list[float]:
    """Centred moving average over ``k`` points (shorter at the ends)."""
    h = k // 2
    return [sum(ys[max(0, i - h): i + h + 1]) / len(ys[max(0, i - h): i + h + 1]) for i in range(len(ys))]


def _segments(pts: Sequence[tuple[float, float]], factor: float = 8.0) -> list[list[tuple[float, float]]]:
    """Split points (sorted by step) where the step gap is ``factor`` × the median gap or more.

    A log with a hole in it (records lost with a machine) is drawn as separate pieces rather
    than with a line across steps nobody logged.
    """
    if len(pts) < 3:
        return [list(pts)] if pts else []
    gaps = sorted(b[0] - a[0] for a, b in zip(pts, pts[1:]))
    limit = factor * max(gaps[len(gaps) // 2], 1e-9)
    out: list[list[tuple[float, float]]] = [[pts[0]]]
    for a, b in zip(pts, pts[1:]):
        if b[0] - a[0] >= limit:
            out.append([])
        out[-1].append(b)
    return out


def _val_values(vals: Sequence[dict[str, Any]], key: str) -> list[float]:
    return [lv[key] for v in vals for k, lv in v["val"].items()
            if k != "score" and isinstance(lv, dict) and _finite(lv.get(key))]


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def plot_training(records: Sequence[dict[str, Any]], path: Path) -> bool:
    """Train loss / bpp / PSNR against step (raw faint, smoothed solid) and validation per level."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    facts = run_facts(records)
    train, vals = facts["curve"], facts["vals"]
    if not train and not vals:
        return False
    by_lam = [val_by_lambda(v) for v in vals]
    lams = sorted({lam for d in by_lam for lam in d})
    cmap = plt.get_cmap("viridis")
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.3), dpi=110)
    k = max(1, min(9, len(train) // 20 * 2 + 1))
    for ax, key, title in zip(axes, ("loss", "bpp", "psnr"), ("loss (rate + λ·255²·MSE)", "bpp", "PSNR (dB)"),
                              strict=True):
        pts = [(r["step"], r[key]) for r in train if _finite(r.get(key))]
        lims: tuple[float, float] | None = None
        if pts:
            xs, ys = zip(*pts, strict=True)
            for i, seg in enumerate(_segments(pts)):
                sx, sy = zip(*seg, strict=True)
                ax.plot(sx, sy, color="#999999", lw=0.6, alpha=0.6)
                ax.plot(sx, _smooth(sy, k), color="black", lw=1.6,
                        label=None if i else f"train (mixed levels; smoothed over {k} records)")
            # the first records (PSNR ~10 dB, bpp ~5) would squash the rest: limits from the last 90 %
            tail = [*ys[len(ys) // 10:], *_val_values(vals, key)]
            if key == "psnr":
                lims = (min(tail) - 1.0, max(tail) + 0.5)
            elif key == "bpp":
                lims = (0.0, 1.4 * max(tail))  # room for the legend
        if key == "loss":
            ax.set_yscale("log")
            vs = [(v["step"], v["val"]["score"]) for v in vals if _finite(v["val"].get("score"))]
            for i, seg in enumerate(_segments(vs, factor=4.0)):
                ax.plot(*zip(*seg, strict=True), "s--", color="#d62728", ms=3.5,
                        label=None if i else "validation score (mean loss over levels)")
        else:
            for i, lam in enumerate(lams):
                vs = [(v["step"], d[lam][key]) for v, d in zip(vals, by_lam, strict=True)
                      if lam in d and _finite(d[lam].get(key))]
                for j, seg in enumerate(_segments(vs, factor=4.0)):
                    ax.plot(*zip(*seg, strict=True), "o-", ms=3, lw=1.2,
                            color=cmap(i / max(1, len(lams) - 1)), label=None if j else f"validation, λ = {lam:g}")
        if lims is not None and lims[1] > lims[0]:
            ax.set_ylim(*lims)
        for p, first, _ in facts["patch_phases"][1:]:
            ax.axvline(first, color="#1f77b4", ls=":", lw=1)
            ax.text(first, 0.98, f" patch {p}", transform=ax.get_xaxis_transform(), va="top", fontsize=7,
                    color="#1f77b4")
        ax.set_xlabel("step")
        ax.set_title(title, fontsize=10)
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def rd_figure(results_dir: Path, results: dict[str, Any], out: Path) -> bool:
    """Copy the benchmark's ``rd_psnr.png`` to ``out`` (or draw it from ``results.json``)."""
    src = Path(results_dir) / "rd_psnr.png"
    if src.is_file():
        shutil.copyfile(src, out)
        return True
    from .rd import curve_from_dict
    from .report import plot_rd

    curves = {k: curve_from_dict(v) for k, v in {**results.get("curves", {}),
                                                  **results.get("references", {})}.items()}
    if "vaecodec" not in curves:
        return False
    plot_rd(curves, "psnr", out, f"{results['dataset']['name']}: PSNR-RGB vs bpp (dashed = published)")
    return True


# ----------------------------------------------------------------------------- the card


def _f(v: Any, fmt: str, missing: str = NOT_MEASURED) -> str:
    return format(v, fmt) if _finite(v) else missing


def _pct(v: Any) -> str:
    return f"{v:+.1f} %" if _finite(v) else NOT_MEASURED


def _bd_cell(entry: dict[str, Any] | None) -> str:
    """A BD-rate with the quality range it was integrated over."""
    if entry is None:
        return NOT_MEASURED
    if not _finite(entry["value"]):
        return f"{NOT_MEASURED} (the two curves' quality ranges do not overlap)"
    lo, hi = entry["lo"], entry["hi"]
    return _pct(entry["value"]) + (f" over {lo:.2f}–{hi:.2f}" if _finite(lo) and _finite(hi) else "")


def _status(value: Any, target: float, counts: bool) -> str:
    if not _finite(value):
        return NOT_MEASURED
    if not counts:
        return "does not count (not measured on the 24 Kodak images)"
    return "**met**" if value <= target else "**not met**"


def _rel(path: str | Path) -> str:
    """``path`` relative to the repository when it is inside the repository's parent folder."""
    p = Path(path)
    try:
        r = p.resolve()
        return os.path.relpath(r, REPO_ROOT) if r.is_relative_to(REPO_ROOT.parent) else str(p)
    except (OSError, ValueError):
        return str(p)


#: (config key, ``vaecodec train`` option, the option's default) of the options a resume repeats.
_TRAIN_OPTIONS: tuple[tuple[str, str, Any], ...] = (
    ("lr_decay_start", "--lr-decay-start", 0), ("lr_min", "--lr-min", 1e-5), ("metric", "--metric", "mse"),
    ("val_fraction", "--val-fraction", 0.03), ("val_every_s", "--val-every", 900.0),
    ("checkpoint_every_s", "--checkpoint-every", 300.0), ("precision", "--precision", "auto"),
    ("seed", "--seed", 0))


def _train_command(cfg: dict[str, Any] | None, run_dir: str) -> str:
    """The ``vaecodec train`` command that resumes the run (from the checkpoint's config when known)."""
    data = _rel(cfg["data"]) if cfg and cfg.get("data") else "../shared/datasets/train"
    parts = ["python -m vaecodec train", data, "--out", run_dir]
    if not cfg:
        return ("# add the run's options (--steps, --batch-size, --patch-size, --lr, ...): not recorded "
                "without its checkpoint\n" + " ".join(parts))
    parts += [f"--steps {cfg['steps']}", f"--batch-size {cfg['batch_size']}",
              f"--patch-size {cfg['patch_size']}", f"--lr {cfg['lr']:g}"]
    for key, flag, default in _TRAIN_OPTIONS:
        v = cfg.get(key)
        if v is not None and v != default:
            parts.append(f"{flag} {v:g}" if isinstance(v, float) else f"{flag} {v}")
    if (cfg.get("N"), cfg.get("M")) != (128, 192):
        parts.append(f"--channels {cfg.get('N')} {cfg.get('M')}")
    return " ".join(parts)


def _targets_md(results: dict[str, Any] | None, bd: dict[str, dict[str, Any] | None], kodak: bool,
                stale: bool | None, model_id: str) -> list[str]:
    L = ["## Targets and what was achieved", ""]
    if results is None:
        L += [f"No benchmark results were given, so the RD figures are {NOT_MEASURED}.", ""]
    elif not kodak:
        ds = results.get("dataset", {})
        L += [f"**These results are not the Kodak measurement**: they come from `{ds.get('path')}` "
              f"({len(ds.get('images', []))} images). The targets are defined on the 24 Kodak images; "
              f"run `{KODAK_CMD}` and regenerate this card.", ""]
    L += ["BD-rate of vaecodec on PSNR-RGB (negative = vaecodec needs fewer bits for the same PSNR); "
          "bpp from the whole `.vae` file, PSNR on the 8-bit decoded image.", "",
          "| against | target | achieved | status |", "|---|---|---|---|"]
    for anchor, label in COMPARED:
        target = TARGETS.get(anchor)
        entry = bd[anchor]
        if target is None:
            L.append(f"| {label} | (no target) | {_bd_cell(entry)} | – |")
        else:
            status = _status(entry["value"] if entry else None, target, kodak)
            L.append(f"| {label} | ≤ {target:+.0f} % | {_bd_cell(entry)} | {status} |")
    L += ["", "A learned codec is worth choosing once it beats AVIF; the ambition beyond that is CompressAI's "
          "one-model variable-rate mean-scale curve, about −54 % against JPEG.", ""]
    if results and stale:
        L += [f"**Warning:** the weights file changed after the benchmark's commit "
              f"(`{results['environment'].get('git_commit')}`): the RD figures may be of older weights. "
              "Re-run the benchmark.", ""]
    options = (results or {}).get("codecs", {}).get("vaecodec", {}).get("options") or {}
    if options.get("model_id") and options["model_id"] != model_id:
        L += [f"**Warning:** the benchmark measured model `{options['model_id']}`, this card describes "
              f"`{model_id}`.", ""]
    return L


def _model_md(weights: dict[str, Any], levels: int, lambdas: Sequence[float], weights_from: Any) -> list[str]:
    meta = weights["metadata"]
    checkerboard = meta.get("arch", "").startswith("checkerboard")
    L = ["## Model", "",
         "Mean-scale hyperprior (Minnen, Ballé and Toderici, NeurIPS 2018"
         + (", with a two-pass checkerboard context instead of the serial autoregressive one" if checkerboard
            else ", without the autoregressive context model") + ") built from CompressAI's layers: "
         "analysis `g_a` and synthesis `g_s` of four 5×5 "
         "stride-2 convolutions with GDN / inverse GDN, hyper-analysis and hyper-synthesis with LeakyReLU; "
         "the hyper-latents `z` use a factorized prior (`EntropyBottleneck`), the latents `y` a Gaussian "
         "whose mean and scale come from the hyper-synthesis (`GaussianConditional`). Entropy coding: "
         "CompressAI's rANS, in vaecodec's own `.vae` container.", ""]
    if checkerboard:
        L += ["Checkerboard context (He et al., CVPR 2021): half of the latents (the anchors, row + column "
              "even) are coded with the hyperprior's parameters alone; the other half after them, with "
              "parameters corrected by a masked 5×5 convolution over the decoded anchors and three 1×1 "
              "convolutions (`vaecodec.model.CheckerboardModel`). Its inputs are divided by the level's "
              "gain, so it sees latents on one scale at every rate. Every network that chooses a table or "
              "a mean runs in exact integer arithmetic (`vaecodec.exact`), so files decode identically "
              "on any machine.", ""]
    L += [
         "Variable rate: gain units (Cui et al., CVPR 2021), a learned per-channel gain and inverse gain on "
         f"`y` and on `z` for each of the {levels} levels, log-interpolated between levels, so one set of "
         "weights covers every rate. Level *i* is trained at the λ of the ladder below (loss = rate + "
         "λ·255²·MSE, CompressAI's ladder for its MSE models). The user's quality 0..100 maps linearly "
         f"onto the levels: level = quality / 100 × {levels - 1} (`vaecodec.codec.quality_to_level`).", "",
         "| level | " + " | ".join(str(i) for i in range(len(lambdas))) + " |",
         "|---|" + "---|" * len(lambdas),
         "| λ | " + " | ".join(f"{v:g}" for v in lambdas) + " |",
         "| quality | " + " | ".join(f"{100 * i / (levels - 1):.4g}" for i in range(len(lambdas))) + " |", ""]
    listed = weights["manifest_sha256"]
    check = ("" if listed is None else " (matches the manifest)" if listed == weights["sha256"]
             else f" (**the manifest says `{listed}`**)")
    L += ["| weights | |", "|---|---|",
          f"| file | `{_rel(weights['path'])}` ({weights['size'] / 1e6:.1f} MB) |",
          f"| model id | `{meta.get('model_id', NOT_RECORDED)}` |",
          f"| N (transform / z channels), M (y channels) | {meta.get('N', NOT_RECORDED)}, "
          f"{meta.get('M', NOT_RECORDED)} |",
          f"| levels | {levels} |",
          f"| parameters (without entropy tables) | {weights['params']:,} ({', '.join(weights['dtypes'])}) |",
          f"| sha256 | `{weights['sha256']}`{check} |"]
    L += [f"| metadata `{k}` | {v} |" for k, v in sorted(meta.items()) if k not in ("model_id", "N", "M", "levels")]
    L += [f"| exported from | {weights_from or NOT_RECORDED} |", ""]
    if not weights_from:
        L += ["Which checkpoint of the training run below these weights were exported from is not recorded "
              "(pass `weights_from` in `--notes`); the training facts are those of the logged run.", ""]
    return L


def _data_md(data: dict[str, Any] | None, data_dir: str) -> list[str]:
    L = ["## Training data", ""]
    if data:
        L += [f"`{data_dir}`: {data['count']} photographs ({data['megapixels']:.1f} megapixels in all; "
              f"shorter side {data['short_min']}–{data['short_max']} px, exactly 512 px for "
              f"{data['short_512']} of them), see `../shared/datasets/README.md` for sources, licences and "
              "processing.", ""]
        if data["k"]:
            L += ["Validation hold-out (deterministic, `vaecodec.training.loop.split_train_val`): the files sorted "
                  f"by name, every {_ordinal(data['k'])} starting with the {_ordinal(data['k'] // 2 + 1)}: "
                  f"{len(data['val'])} images held out, {data['train']} used for training. Held out: "
                  + ", ".join(f"`{n}`" for n in data["val"]) + ".", ""]
        if data["kodak_names"]:
            L += [f"**Warning:** Kodak-like file names in the training folder: {data['kodak_names']}.", ""]
    else:
        L += [f"The training folder `{data_dir}` was not available when this card was generated: its size "
              f"and split are {NOT_RECORDED} here (see `../shared/datasets/README.md`).", ""]
    L += ["Kodak (`../shared/datasets/kodak`) is the evaluation set only: it is used neither for training "
          "nor for model selection (the best checkpoint is chosen by validation on the held-out "
          "training photos).", ""]
    return L


def _setup_rows(facts: dict[str, Any], ckpt: dict[str, Any] | None,
                notes: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(what, value, source) rows of the training setup; ``notes`` entries win and are consumed."""
    cfg = (ckpt or {}).get("config") or None
    rows: list[tuple[str, str, str]] = []

    def row(name: str, key: str, derived: Any, source: str) -> None:
        if key in notes:
            rows.append((name, str(notes.pop(key)), "notes"))
        elif derived is None:
            rows.append((name, NOT_RECORDED, ""))
        else:
            rows.append((name, str(derived), source))

    secs = facts["seconds"]
    row("steps", "steps", facts["steps"], "log")
    row("training time", "wall_clock_hours", None if secs is None
        else f"{secs / 3600:.2f} h (cumulative training-loop time, validation included)", "log")
    if facts["steps"] and _finite(secs) and secs > 0:
        rows.append(("speed", f"{facts['steps'] / (secs / 3600):,.0f} steps per hour", "log"))
    row("hardware", "hardware", f"{hardware_string()} (the machine that generated this card)", "detected")
    row("processes", "processes", (ckpt or {}).get("world"), "checkpoint")
    row("batch size", "batch_size", cfg.get("batch_size") if cfg else None, "checkpoint")
    phases = ", ".join(f"{p}×{p} px (log records {a}–{b})" for p, a, b in facts["patch_phases"])
    row("crops", "patch_size", f"{phases}; random crops, horizontal flips" if phases else None, "log")
    lr = None
    if facts["lr_max"] is not None:
        lr = f"peak {facts['lr_max']:g}, at the last record {facts['lr_last']:g}"
        if cfg:
            decay = (f"cosine decay to {cfg.get('lr_min'):g} from step {cfg.get('lr_decay_start')} to "
                     f"{cfg.get('steps')}" if cfg.get("lr_decay_start") else "then constant")
            lr += f" (Adam; warm-up {cfg.get('lr_warmup')} steps; {decay})"
    row("learning rate", "lr", lr, "log + checkpoint" if cfg else "log")
    prec = None
    if cfg:
        prec = {"auto": "auto: bf16 autocast on CPUs with fast bf16 (entropy models in float32), "
                        "float32 on other CPUs, fp16 AMP on CUDA",
                "bf16": "bf16 autocast (entropy models in float32)",
                "fp32": "float32"}.get(cfg.get("precision"), cfg.get("precision"))
    row("precision", "precision", prec, "checkpoint")
    if cfg:
        levels = ("uniformly over the ladder (continuous)" if not cfg.get("level_weights")
                  else f"with weights {cfg.get('level_weights')}")
        bal = cfg.get("level_balance") or 0
        balance = (f"each crop's loss weighted by (λ/λ_mid)^-{bal:g} (--level-balance {bal:g})" if bal
                   else "the crops' losses averaged unweighted")
        rows.append(("objective", f"{cfg.get('metric')}; level per crop drawn {levels}; {balance}; auxiliary (quantile) "
                     f"loss with its own Adam group, lr {cfg.get('aux_lr'):g}; gradient clipping "
                     f"{cfg.get('clip'):g}", "checkpoint"))
        rows.append(("seed, validation interval", f"{cfg.get('seed')}, every {cfg.get('val_every_s'):g} s",
                     "checkpoint"))
    rows += [(k.replace("_", " "), str(v), "notes") for k, v in notes.items()]
    notes.clear()
    return rows


def _training_md(facts: dict[str, Any], ckpt: dict[str, Any] | None, notes: dict[str, Any],
                 remarks: list[str], log_arg: str, curve_png: bool) -> list[str]:
    L = ["## Training", "", "| | | source |", "|---|---|---|"]
    L += [f"| {a} | {b} | {c} |" for a, b, c in _setup_rows(facts, ckpt, notes)]
    L += ["", f"Sources: log = `{log_arg}` merged into `{LOG_NAME}` (train records are means over the "
          "last 25 steps, levels mixed)" + (", checkpoint = the run's training config" if ckpt else "")
          + ", notes = given by whoever generated this card.", ""]
    L += [f"- {r}" for r in remarks] + ([""] if remarks else [])
    if curve_png:
        L += [f"![training curve]({CURVE_PNG})", "",
              "Train loss, bpp and PSNR (grey: per record; black: smoothed) and the validation bpp and PSNR "
              "per level on the held-out photos (bpp estimated from the priors, PSNR of the 8-bit "
              f"reconstruction). Data: [`{LOG_NAME}`]({LOG_NAME}).", ""]
    else:
        L += [f"Training curve: {NOT_MEASURED} (no log records).", ""]
    vals = facts["vals"]
    if not vals:
        return L
    shown, best = vals[-8:], facts["best_val"]
    if best is not None and best not in shown:
        shown = [best, *shown]
    lv_keys = sorted({k for v in shown for k, lv in v["val"].items() if isinstance(lv, dict)}, key=float)
    L += ["### Validation (held-out training photos)", "",
          "| step | " + " | ".join(f"level {k}: bpp / PSNR" for k in lv_keys) + " | score | objective |",
          "|---|" + "---|" * (len(lv_keys) + 2)]
    for v in shown:
        per = [v["val"].get(k) or {} for k in lv_keys]
        cells = [f"{_f(c.get('bpp'), '.3f')} / {_f(c.get('psnr'), '.2f')}" for c in per]
        mark = " (best)" if v is best else ""
        L.append(f"| {v['step']}{mark} | " + " | ".join(cells) + f" | {_f(v['val'].get('score'), '.4f')} | "
                 f"{_f(v['val'].get('objective'), '.4f')} |")
    L += ["", f"{len(vals)} validations in all; the last {min(8, len(vals))} and the best are shown. Score = "
          "mean of the per-level losses; objective = the same losses weighted by the level balance, which "
          "picks best.pt (the best is the lowest objective since the ladder or the balance last changed; "
          "the score before the objective was logged).", ""]
    return L


def _rd_md(results: dict[str, Any] | None, results_dir: Path | None, bd: dict[str, Any],
           bd_ms: dict[str, Any], levels: int, lambdas: Sequence[float], rd_png: bool) -> list[str]:
    from vaecodec.codec import quality_to_level

    L = ["## Rate–distortion", ""]
    vae = (results or {}).get("curves", {}).get("vaecodec")
    if results is None or vae is None:
        return L + [f"Kodak RD table: {NOT_MEASURED}. Run `{KODAK_CMD}`, then regenerate this card.", ""]
    env, ds = results.get("environment", {}), results.get("dataset", {})
    quick = " (quick mode: fewer points)" if results.get("settings", {}).get("quick") else ""
    title = "Kodak" if ds.get("kodak") else f"`{ds.get('path')}` (not Kodak)"
    L += [f"### {title}: vaecodec", "",
          f"{len(ds.get('images', []))} images; measured {env.get('date_utc') or NOT_RECORDED} at commit "
          f"`{env.get('git_commit') or NOT_RECORDED}` on {env.get('cpu') or NOT_RECORDED}{quick}, by "
          f"`{env.get('command') or NOT_RECORDED}`. Means over the images of per-image bpp (whole file), "
          "PSNR-RGB and MS-SSIM.", "",
          "| quality | level | λ | bpp | PSNR-RGB (dB) | MS-SSIM | MS-SSIM (dB) |",
          "|---|---|---|---|---|---|---|"]
    for i, q in enumerate(vae.get("quality") or [None] * len(vae["bpp"])):
        lvl = quality_to_level(q, levels) if _finite(q) else None
        lam = lambda_at_level(lvl, lambdas[:levels]) if lvl is not None else None
        L.append(f"| {_f(q, 'g', '?')} | {_f(lvl, '.3g', '?')} | {_f(lam, '.4f', '?')} | "
                 f"{_f(vae['bpp'][i], '.4f')} | {_f(vae['psnr'][i], '.2f')} | "
                 f"{_f(vae['ms_ssim'][i], '.4f')} | {_f(vae['ms_ssim_db'][i], '.2f')} |")
    L += ["", "### BD-rate of vaecodec", "",
          "Bjøntegaard rate difference (PCHIP of ln(bpp), over the overlap of the two curves' quality "
          "ranges, given after the figure). Negative = vaecodec needs fewer bits.", "",
          "| against | PSNR-RGB | MS-SSIM (dB) |", "|---|---|---|"]
    L += [f"| {label} | {_bd_cell(bd[a])} | {_bd_cell(bd_ms[a])} |" for a, label in COMPARED]
    L.append("")
    if any(e and e["how"] == "inverted" for e in (*bd.values(), *bd_ms.values())):
        L += ["The benchmark stores the published curves' BD-rates against vaecodec; the figures above are "
              "their exact inverses (1/(1+x) − 1: same overlap, opposite sign of the mean log-rate "
              "difference).", ""]
    if results.get("references_note"):
        L += [f"Published curves: {results['references_note']}", ""]
    if rd_png:
        L += [f"![RD plot]({RD_PNG})", ""]
    if results_dir is not None:
        L += [f"Full report: `{_rel(results_dir)}/report.md` (every codec, MS-SSIM plot, per-image points).",
              ""]
    return L


def _speed_md(results_dir: Path | None, model_id: str) -> list[str]:
    """Encode and decode speed at batch 1 on the CPU from the run's ``throughput.json``, if it has one."""
    path = None if results_dir is None else Path(results_dir) / "throughput.json"
    if path is None or not path.is_file():
        return []
    from .report import throughput_rows

    bench = json.loads(path.read_text())
    rows = [r for r in throughput_rows(bench) if r["device"] == "cpu" and r["batch"] == 1 and r["mp_per_s"]]
    speed: dict[str, dict[str, Any]] = {}
    for r in rows:
        speed.setdefault(r["codec"], {"label": r["label"], "threads": r["threads"]})[r["op"]] = r["mp_per_s"]
    if "vaecodec" not in speed:
        return []
    base = speed.get("vaecodec:msh@14", {})
    mi = bench.get("machine_info", {})
    L = ["### Speed", "",
         f"Megapixels per second at batch 1 on the CPU ({mi.get('cpu_name', '?')}, torch threads "
         f"{mi.get('torch_threads', '?')}, load average at start "
         f"{', '.join(f'{x:.2f}' for x in mi.get('load_average', [])) or '?'}), the median of the timed rounds "
         f"over the same images, from `{_rel(path)}`. \"Time × msh@14\" divides msh@14's speed by the "
         "codec's, both measured in the same run; the target for the second generation is at most 1.5.", "",
         "| codec | threads | encode MP/s | decode MP/s | encode time × msh@14 | decode time × msh@14 |",
         "|---|---|---|---|---|---|"]
    order = ["vaecodec", *sorted(c for c in speed if c.startswith("vaecodec:")), "jpeg-420", "avif-420"]
    for c in (c for c in order if c in speed):
        v = speed[c]
        label = f"vaecodec `{model_id}`" if c == "vaecodec" else v["label"]
        ratios = [base[op] / v[op] if c.startswith("vaecodec") and base.get(op) and v.get(op) else None
                  for op in ("encode", "decode")]
        L.append(f"| {label} | {_f(v['threads'], 'g', '?')} | {_f(v.get('encode'), '.2f')} | "
                 f"{_f(v.get('decode'), '.2f')} | {_f(ratios[0], '.2f', '–')} | {_f(ratios[1], '.2f', '–')} |")
    return [*L, ""]


def _context_commands_md(weights: dict[str, Any], model_id: str, notes_arg: str | None) -> list[str]:
    """Reproduce section of a checkerboard model grown from a shipped hyperprior (``base_model``)."""
    meta = weights["metadata"]
    base = meta["base_model"].replace("@", "-")
    return ["## Reproduce", "", "Re-measure on Kodak, then regenerate this card:", "",
            "```sh", KODAK_CMD,
            f"python -m benchmarks.model_card --results benchmarks/results/kodak --weights {_rel(weights['path'])} "
            "--out assets/" + (f" --notes {notes_arg}" if notes_arg else ""), "```", "",
            f"Train the context again on the frozen `{meta['base_model']}` (resumable: rerun the command; the "
            "learning rate follows the time budget), compare with real files on the held-out photos, then ship:",
            "", "```sh",
            f"vaecodec train ../shared/datasets/train --out runs/ctx --context --init vaecodec/weights/{base}.safetensors "
            f"--patch-size 256 --lr 1e-3 --max-minutes 60",
            f"python -m benchmarks.heldout {meta['base_model']} runs/ctx/best.pt --data ../shared/datasets/train",
            "python -c \"from vaecodec.training.export import model_from_checkpoint, ship; "
            f"ship(model_from_checkpoint('runs/ctx/best.pt'), '{model_id}')\"", "```", "",
            "`--init shipped` instead continues from this model's own context.", ""]


def _commands_md(log_arg: str, weights: dict[str, Any], cfg: dict[str, Any] | None, run_dir: str,
                 model_id: str, notes_arg: str | None = None) -> list[str]:
    if "base_model" in weights["metadata"]:
        return _context_commands_md(weights, model_id, notes_arg)
    return ["## Reproduce", "", "Re-measure on Kodak, then regenerate this card:", "",
            "```sh", KODAK_CMD,
            f"python -m benchmarks.model_card --log {log_arg} --results benchmarks/results/kodak "
            f"--weights {_rel(weights['path'])} --out assets/" + (f" --notes {notes_arg}" if notes_arg else ""),
            "```", "",
            "Continue training (resumes from the run folder's `last.pt`; the same command restarts after any "
            "interruption), then ship the best checkpoint (fp16 weights into `vaecodec/weights/`, sha256 "
            "into `manifest.json`):", "",
            "```sh", _train_command(cfg, run_dir),
            "python -c \"from vaecodec.training.export import model_from_checkpoint, ship; "
            f"ship(model_from_checkpoint('{run_dir}/best.pt'), '{model_id}')\"", "```", "",
            f"For weights outside the package: `python -m vaecodec export {run_dir}/best.pt "
            "-o my.safetensors --model-id mine@1`. With several processes (PyTorch DDP, gloo on CPU): "
            "`torchrun --nproc-per-node 2 -m vaecodec train ...` with the same options.", ""]


def render_card(*, records: Sequence[dict[str, Any]], results: dict[str, Any] | None,
                results_dir: Path | None, weights: dict[str, Any], notes: dict[str, Any],
                ckpt: dict[str, Any] | None, data: dict[str, Any] | None, data_dir: str, run_dir: str,
                log_arg: str, rd_png: bool, curve_png: bool, stale: bool | None,
                notes_arg: str | None = None) -> str:
    """The whole card as Markdown."""
    from vaecodec.model import LAMBDAS, ladder as ladder_of

    meta = weights["metadata"]
    levels = int(meta.get("levels", len(LAMBDAS)))
    # the ladder the weights were trained on: stored by the export since it grew a rung;
    # before that, eight levels meant CompressAI's eight λ values
    if "lambdas" in meta:
        ladder = tuple(float(v) for v in json.loads(meta["lambdas"]))
    else:
        ladder = ladder_of(levels)
    model_id = meta.get("model_id", weights["path"].stem)
    notes = dict(notes)
    remarks = notes.pop("remarks", [])
    remarks = [remarks] if isinstance(remarks, str) else [str(r) for r in remarks]
    weights_from = notes.pop("weights_from", None)
    kodak = bool(results and results.get("dataset", {}).get("kodak"))
    has_vae = bool(results and "vaecodec" in results.get("curves", {}))
    bd = {a: bd_entry(results, a) if results and has_vae else None for a, _ in COMPARED}
    bd_ms = {a: bd_entry(results, a, "ms_ssim_db") if results and has_vae else None for a, _ in COMPARED}
    L = [f"# Model card: vaecodec `{model_id}`", "",
         "Generated by `python -m benchmarks.model_card` from the training log, the benchmark results and "
         "the weights file; every figure below is read from those inputs. Regenerate it after training "
         "further or re-running the benchmark (commands at the end).", ""]
    L += _targets_md(results, bd, kodak, stale, model_id)
    L += _model_md(weights, levels, ladder, weights_from)
    L += _data_md(data, data_dir)
    L += _training_md(run_facts(records), ckpt, notes, remarks, log_arg, curve_png)
    L += _rd_md(results, results_dir, bd, bd_ms, levels, ladder, rd_png)
    L += _speed_md(results_dir, model_id)
    L += _commands_md(log_arg, weights, (ckpt or {}).get("config") or None, run_dir, model_id, notes_arg)
    return "\n".join(L)


# ----------------------------------------------------------------------------- command


def build(log: Path | None, results_dir: Path | None, weights: Path, out: Path, *,
          notes: dict[str, Any] | None = None, checkpoint: Path | None = None, train_data: Path | None = None,
          every: int = 100, merge: bool = True, notes_arg: str | None = None) -> Path:
    """Write the compact log, the figures and the card into ``out``; returns the card's path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for parent in {(out / CURVE_PNG).parent, (out / RD_PNG).parent}:
        parent.mkdir(exist_ok=True)
    new = read_jsonl(log) if log is not None and Path(log).is_file() else []
    wfacts = weights_facts(weights)
    step = str(wfacts["metadata"].get("step", ""))
    if step.isdigit():  # a run that went on past the weights: its later records describe later weights
        new = [r for r in new if not isinstance(r.get("step"), int) or r["step"] <= int(step)]
    records = merge_logs(out / LOG_NAME if merge else None, new, every)
    if records:
        write_jsonl(out / LOG_NAME, records)
    curve_png = plot_training(records, out / CURVE_PNG) if records else False
    results = load_results(results_dir)
    rd_png = results is not None and results_dir is not None and rd_figure(results_dir, results, out / RD_PNG)
    if checkpoint is None and log is not None and (Path(log).parent / "last.pt").is_file():
        checkpoint = Path(log).parent / "last.pt"
    ckpt = read_checkpoint_info(checkpoint) if checkpoint is not None else None
    cfg = (ckpt or {}).get("config") or {}
    data_dir = (train_data if train_data is not None
                else Path(cfg.get("data") or REPO_ROOT.parent / "shared" / "datasets" / "train"))
    data = training_data_facts(data_dir, cfg.get("val_fraction", 0.03))
    measured = ((results or {}).get("codecs", {}).get("vaecodec", {}).get("options") or {}).get("weights_sha256")
    if measured:  # the benchmark recorded the weights it measured: compare them, not the commits
        stale = measured != wfacts["sha256"]
    else:
        stale = (weights_changed_since(results.get("environment", {}).get("git_commit"), Path(weights))
                 if results else None)
    run_dir = _rel(Path(log).parent) if log is not None else (_rel(cfg["out"]) if cfg.get("out") else "RUN")
    card = render_card(records=records, results=results, results_dir=results_dir,
                       weights=wfacts, notes=notes or {}, ckpt=ckpt, data=data,
                       data_dir=_rel(data_dir), run_dir=run_dir,
                       log_arg=_rel(log) if log is not None else "RUN/log.jsonl", rd_png=rd_png,
                       curve_png=curve_png, stale=stale, notes_arg=notes_arg)
    path = out / CARD_NAME
    path.write_text(card)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.model_card", description=__doc__.splitlines()[0])
    ap.add_argument("--log", type=Path, help="the training run's log.jsonl (read only)")
    ap.add_argument("--results", type=Path, help="a benchmark output folder (results.json, rd_psnr.png)")
    ap.add_argument("--weights", type=Path, required=True, help="the .safetensors file the card describes")
    ap.add_argument("--out", type=Path, default=REPO_ROOT / "assets", help="output folder (default assets/)")
    ap.add_argument("--notes", type=Path, help="JSON object of facts the inputs lack (see the module doc)")
    ap.add_argument("--checkpoint", type=Path, help="a training checkpoint whose config to report "
                    "(default: last.pt next to --log, if present)")
    ap.add_argument("--train-data", type=Path, help="training folder (default: the checkpoint's, else "
                    "../shared/datasets/train)")
    ap.add_argument("--every", type=int, default=100, help="keep about one train record per this many steps")
    ap.add_argument("--no-merge", action="store_true", help=f"replace OUT/{LOG_NAME} instead of merging")
    args = ap.parse_args(argv)
    notes = json.loads(args.notes.read_text()) if args.notes else {}
    if not isinstance(notes, dict):
        sys.exit("--notes: expected a JSON object")
    path = build(args.log, args.results, args.weights, args.out, notes=notes, checkpoint=args.checkpoint,
                 train_data=args.train_data, every=args.every, merge=not args.no_merge,
                 notes_arg=_rel(args.notes) if args.notes else None)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
