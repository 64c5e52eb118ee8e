"""Training: the rate–distortion objective over a folder of images, resumable at any step.

The objective is the β-VAE ELBO of the hyperprior papers: the rate (bits of y and z under
their priors, per pixel) plus ``λ·255²·MSE`` (or ``λ'·(1 − MS-SSIM)``), with a λ drawn for
every crop from the quality ladder (:func:`vaecodec.model.ladder`, log-interpolated at a
continuous level), so one model learns every rate. The auxiliary loss that fits the
factorized prior's quantiles is optimized alongside, in its own parameter group.

Runs single-process, or data-parallel under ``torchrun`` (PyTorch DDP; gloo on CPU, NCCL on
CUDA). On CPU the transforms run under bf16 autocast; the entropy models stay in float32.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from ..errors import TrainingError
from ..model import LAMBDAS, HyperpriorModel, arch_of, build_model, fast_bf16, ladder, lambda_at
from .surgery import SPLIT_NOISE, grow_levels, widen_latents, widen_transforms

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".ppm"}


@dataclasses.dataclass
class TrainConfig:
    """Options of one training run (all stored in the checkpoint and the log)."""

    data: str
    out: str
    steps: int = 100_000
    batch_size: int = 16
    patch_size: int = 128
    lr: float = 5e-4
    lr_min: float = 1e-5
    lr_warmup: int = 500
    lr_decay_start: int = 0  # cosine decay from this step to `steps`; 0 = constant lr
    aux_lr: float = 1e-3
    clip: float = 1.0
    ema_decay: float = 0.999  # exponential moving average of the weights (0: off); validated and exported
    N: int | None = None  # channels of the transforms and z; None: those of the resumed run or of init,
    M: int | None = None  # and of y (wider than init's widens the model); else 128 and 192
    metric: str = "mse"  # or "ms-ssim"
    level_weights: tuple[float, ...] | None = None  # sampling weight per ladder level
    level_balance: float = 0.0  # loss weight of a crop ∝ (λ/λ_mid)^-level_balance (see loss_weights)
    val_fraction: float = 0.03
    val_every_s: float = 900.0
    checkpoint_every_s: float = 300.0
    log_every: int = 25
    seed: int = 0
    precision: str = "auto"  # "bf16", "fp32" or "auto" (fp16 AMP on CUDA; bf16 on CPUs where fast_bf16)
    init: str | None = None  # path to a .safetensors / checkpoint, or "shipped"
    start_step: int = 0  # with init: count steps from here (continuing a run on a new machine)
    start_seconds: float = 0.0  # with init: training seconds already spent (for the log)
    device: str = "auto"
    max_minutes: float | None = None
    # steps over which the rate of the y channels that widening (--channels) added comes into the loss
    # (not at all for the first half, then a linear ramp to in full), so the synthesis learns to read
    # them before the rate can prune them; 0: at once
    open_channels: int = 0
    # rungs of the λ ladder (vaecodec.model.ladder); None: those of the run resumed or of init, else 9.
    # More than the weights have grows the ladder (above 0.18 beyond nine)
    levels: int | None = None
    # with N wider than init's: the new hidden units of g_a and g_s start as copies of old ones (Net2Net)
    split_units: bool = False
    # the noise on the split copies' incoming weights, as a share of the layer's weight spread
    split_noise: float = SPLIT_NOISE


# ----------------------------------------------------------------------------- data


def list_images(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        msg = f"{folder}: training data folder not found"
        raise TrainingError(msg)
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        msg = f"{folder}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found"
        raise TrainingError(msg)
    return files


def split_train_val(files: list[Path], val_fraction: float) -> tuple[list[Path], list[Path]]:
    """Deterministic hold-out: every k-th file (sorted by name) goes to validation."""
    if val_fraction <= 0 or len(files) < 4:
        return files, []
    k = max(2, round(1 / val_fraction))
    val = files[k // 2 :: k]
    held = set(val)
    return [f for f in files if f not in held], val


def load_rgb(path: Path) -> np.ndarray:
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


class CropSampler:
    """Random crops with horizontal flips from images held in memory as uint8."""

    def __init__(self, images: list[np.ndarray], patch: int, seed: int) -> None:
        self.images = images
        self.rng = np.random.default_rng(seed)
        self.set_patch(patch)

    def set_patch(self, patch: int) -> None:
        self.patch = patch
        self.eligible = [i for i, im in enumerate(self.images) if min(im.shape[:2]) >= patch]
        if not self.eligible:
            msg = f"no training image is at least {patch}×{patch} pixels"
            raise TrainingError(msg)

    def batch(self, n: int) -> Tensor:
        p = self.patch
        out = np.empty((n, p, p, 3), dtype=np.uint8)
        for k in range(n):
            im = self.images[self.eligible[self.rng.integers(len(self.eligible))]]
            h, w = im.shape[:2]
            i, j = self.rng.integers(h - p + 1), self.rng.integers(w - p + 1)
            crop = im[i : i + p, j : j + p]
            out[k] = crop[:, ::-1] if self.rng.random() < 0.5 else crop
        return torch.from_numpy(out).permute(0, 3, 1, 2).float().div_(255)


# ----------------------------------------------------------------------------- losses


def loss_weights(lam: Tensor, balance: float) -> Tensor:
    """Weight of each crop's loss in the batch mean: ``(λ / λ_mid) ** -balance``.

    The rate–distortion loss at the optimum of one rung grows about as λ^0.53 over the ladder
    (measured on the held-out photos with msh@7: 0.21 at λ=0.0006, 4.5 at λ=0.18), so in a
    plain batch mean (``balance`` 0) a crop at the top rung pulls the shared weights about 20×
    harder than one at the bottom. The Bjøntegaard rate difference the codec is judged by
    averages *relative* rate differences over the quality range, in which every rung counts
    about the same; ``balance`` 0.5 gives every rung about the same pull. ``λ_mid`` is the
    geometric mean of the two ends of :data:`~vaecodec.model.LAMBDAS`, whose weights are then
    reciprocal (×4.2 and ×0.24 at 0.5); a ladder grown above them keeps its rungs' weights, and
    its new top rungs weigh less (×0.17 at λ = 0.3476).
    """
    if not balance:
        return torch.ones_like(lam)
    lam_mid = math.sqrt(LAMBDAS[0] * LAMBDAS[-1])
    return (lam / lam_mid) ** -balance


def _y_rate_weight(cfg: TrainConfig, opening: dict[str, int] | None, step: int, M: int) -> Tensor | None:
    """Per-channel weight of y's bits in the loss while widened channels open (``open_channels``)."""
    if not opening or not cfg.open_channels or step - opening["start"] >= cfg.open_channels:
        return None
    # none for the first half, then a linear ramp: with Adam, any rate weight at all shrinks the new
    # channels at the full step size until the synthesis reads them (measured: rounded to 0 within
    # 250 steps of a ramp from 0), so the synthesis gets half the steps to learn first
    half = cfg.open_channels / 2
    w = torch.ones(M)
    w[opening["from"]:] = min(1.0, max(0.0, (step - opening["start"] - half) / half))
    return w


def rd_loss(
    out: dict[str, Any], x: Tensor, lam: Tensor, metric: str = "mse", weight: Tensor | None = None,
    y_rate_weight: Tensor | None = None,
) -> dict[str, Tensor]:
    """Per-batch mean of ``bpp + λ·255²·MSE`` (or the MS-SSIM variant); also bpp and PSNR.

    ``weight`` (one per crop, see :func:`loss_weights`) scales each crop's term in the mean.
    ``y_rate_weight`` (one per y channel) scales each channel's bits in the loss; the bpp
    returned counts every bit.
    """
    b, _, h, w = x.shape
    bits_of = {k: -torch.log2(lk.float().clamp_min(1e-9)) for k, lk in out["likelihoods"].items()}
    bits = sum(v.flatten(1).sum(1) for v in bits_of.values())
    bpp = bits / (h * w)
    loss_bpp = bpp
    if y_rate_weight is not None:
        y_bits = bits_of["y"]
        loss_bpp = bpp - (y_bits * (1 - y_rate_weight.to(y_bits))[None, :, None, None]).flatten(1).sum(1) / (h * w)
    x_hat = out["x_hat"].float()
    mse = (x_hat - x).pow(2).flatten(1).mean(1)
    if metric == "mse":
        dist_term = lam * 255**2 * mse
    else:
        from pytorch_msssim import ms_ssim

        msssim = ms_ssim(x_hat.clamp(0, 1), x, data_range=1.0, size_average=False)
        # CompressAI's ms-ssim models use λ·(1 − MS-SSIM) with λ ≈ 2.4·10³ at quality 1;
        # scale the MSE ladder by the same ratio.
        dist_term = lam * (2.4 / 0.0018) * 1000 * (1 - msssim)
    per_crop = loss_bpp + dist_term
    loss = (per_crop * weight).mean() if weight is not None else per_crop.mean()
    psnr = -10 * torch.log10(mse.detach().clamp_min(1e-10))
    return {"loss": loss, "bpp": bpp.detach().mean(), "mse": mse.detach().mean(), "psnr": psnr.mean()}


# ----------------------------------------------------------------------------- run


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` made concrete: fp16 AMP on CUDA, bf16 on CPUs where it is fast (``fast_bf16``), else fp32."""
    if precision != "auto":
        return precision
    if device.type != "cpu":
        return "fp16"
    return "bf16" if fast_bf16(device) else "fp32"


def _lr_at(cfg: TrainConfig, step: int, warm_start: int = 0) -> float:
    """Warm-up over ``lr_warmup`` steps of a fresh optimizer, then constant, then optional cosine decay."""
    if step - warm_start < cfg.lr_warmup:
        lr = cfg.lr * (0.1 + 0.9 * (step - warm_start) / cfg.lr_warmup)
        return min(lr, _lr_at(cfg, step, warm_start - cfg.lr_warmup))
    if cfg.lr_decay_start and step >= cfg.lr_decay_start:
        t = min(1.0, (step - cfg.lr_decay_start) / max(1, cfg.steps - cfg.lr_decay_start))
        return cfg.lr_min + 0.5 * (cfg.lr - cfg.lr_min) * (1 + math.cos(math.pi * t))
    return cfg.lr


def _check_level_weights(weights: tuple[float, ...] | None, levels: int) -> None:
    if weights is None:
        return
    if len(weights) != levels or not all(math.isfinite(w) and w >= 0 for w in weights) or sum(weights) <= 0:
        msg = (f"level weights {list(weights)}: expected {levels} non-negative numbers (one per ladder level, "
               "lowest rate first), not all zero")
        raise TrainingError(msg)


def _sample_levels(cfg: TrainConfig, n: int, gen: torch.Generator, levels: int) -> Tensor:
    """Continuous levels: an integer ladder point (weighted) plus a uniform offset in [-½, ½]."""
    w = torch.tensor(cfg.level_weights or [1.0] * levels, dtype=torch.float64)
    base = torch.multinomial(w, n, replacement=True, generator=gen).float()
    return (base + torch.rand(n, generator=gen) - 0.5).clamp(0, levels - 1)


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


@torch.no_grad()
def validate(
    model: HyperpriorModel, images: list[np.ndarray], device: torch.device,
    levels: tuple[float, ...] | None = None, autocast: bool = False, balance: float = 0.0,
) -> dict[str, Any]:
    """Estimated bpp (from the priors, rounded latents) and PSNR per level, on whole images.

    ``score`` is the mean loss over the levels; ``objective`` the mean of the losses weighted
    as training weighs them (:func:`loss_weights` with ``balance``), which picks the best
    checkpoint. With ``balance`` 0 the two are the same.
    """
    was_training = model.training
    model.eval()
    f = model.downsampling_factor
    res: dict[str, Any] = {}
    if levels is None:  # both ends and two points between, on the ladder's rungs
        top = model.levels - 1
        levels = tuple(float(round(top * k / 3)) for k in range(4))
    level_losses, weighted = [], []
    for lv in levels:
        bpps, psnrs, losses = [], [], []
        for im in images:
            x = torch.from_numpy(im).permute(2, 0, 1)[None].float().div(255).to(device)
            h, w = x.shape[-2:]
            ph, pw = (-h) % f, (-w) % f
            xp = F.pad(x, (0, pw, 0, ph), mode="replicate")
            lvt = torch.full((1,), lv, device=device)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=autocast):
                out = model(xp, lvt)
            out["x_hat"] = out["x_hat"].float()[..., :h, :w].clamp(0, 1)
            # rate over the padded latents, normalised by the real pixel count
            bits = sum((-torch.log2(lk.float().clamp_min(1e-9))).sum() for lk in out["likelihoods"].values())
            bpp = float(bits) / (h * w)
            mse = float((torch.round(out["x_hat"] * 255) / 255 - x).pow(2).mean())
            bpps.append(bpp)
            psnrs.append(-10 * math.log10(max(mse, 1e-10)))
            losses.append(bpp + float(lambda_at(lvt, model.levels)) * 255**2 * mse)
        res[f"{lv:g}"] = {"bpp": float(np.mean(bpps)), "psnr": float(np.mean(psnrs)), "loss": float(np.mean(losses))}
        level_losses.append(float(np.mean(losses)))
        weighted.append(float(loss_weights(lambda_at(lvt, model.levels), balance)) * level_losses[-1])
    res["score"] = float(np.mean(level_losses))
    res["objective"] = float(np.mean(weighted))
    model.train(was_training)
    return res


def load_init_state(init: str) -> dict[str, torch.Tensor]:
    if init == "shipped":
        from ..weights import load_state_dict, shipped_weights_path

        return load_state_dict(shipped_weights_path())
    if init.endswith(".safetensors"):
        from ..weights import load_state_dict

        return load_state_dict(Path(init))
    ck = torch.load(init, map_location="cpu", weights_only=False)
    # the weight average when the run kept one: what its validation scored and what export ships
    return ck["ema"] if "ema" in ck else ck["model"]


def _channels(cfg: TrainConfig, ck: dict[str, Any] | None,
              init_state: dict[str, torch.Tensor] | None) -> tuple[int, int]:
    """N and M as given; the rest from the checkpoint being resumed, else the --init weights, else 128/192."""
    n, m = 128, 192
    if ck is not None:
        n, m = ck.get("config", {}).get("N") or n, ck.get("config", {}).get("M") or m
    elif init_state is not None and "g_a.0.weight" in init_state and "g_a.6.weight" in init_state:
        n, m = init_state["g_a.0.weight"].shape[0], init_state["g_a.6.weight"].shape[0]
    return cfg.N or n, cfg.M or m


def _levels(cfg: TrainConfig, ck: dict[str, Any] | None, init_state: dict[str, torch.Tensor] | None) -> int:
    """The ladder's rungs: as given, else those of the run being resumed or of --init, else nine."""
    state = ck["model"] if ck is not None else init_state
    have = max(state["gain"].shape[0], len(LAMBDAS)) if state is not None and "gain" in state else len(LAMBDAS)
    if cfg.levels is None:
        return have
    if cfg.levels < have:
        msg = f"--levels {cfg.levels}: the weights have {have} levels, and a ladder cannot shrink"
        raise TrainingError(msg)
    return cfg.levels


def arch_of_state(state: dict[str, torch.Tensor]) -> str:
    """The architecture a state dict belongs to: a checkerboard model has context weights."""
    if "g_s.2.conv1.weight" in state:
        return "checkerboard-mean-scale-hyperprior-gain-residual-synthesis"
    if any(k.startswith(("context.", "entropy_parameters.")) for k in state):
        return "checkerboard-mean-scale-hyperprior-gain"
    return "mean-scale-hyperprior-gain"


def _init_weights(model: HyperpriorModel, state: dict[str, torch.Tensor], init: str, split: float | None = None) -> None:
    """Load ``state`` into ``model``, widening it first (``split``: see :func:`widen_transforms`)."""
    try:
        if "g_a.0.weight" in state and state["g_a.0.weight"].shape[0] < model.N:
            log.info("widening the transforms of %s from %d to %d channels", init,
                     state["g_a.0.weight"].shape[0], model.N)
            state = widen_transforms(state, model.N, split=split)
        if "g_a.6.weight" in state and state["g_a.6.weight"].shape[0] < model.M:
            log.info("widening y of %s from %d to %d channels", init, state["g_a.6.weight"].shape[0], model.M)
            state = widen_latents(state, model.M)
        model.load_state_dict(grow_levels(state, model.levels))
    except (RuntimeError, KeyError) as e:
        msg = f"{init}: weights do not fit the model ({str(e).splitlines()[0]})"
        raise TrainingError(msg) from None


def _agree(flags: dict[str, bool], world: int) -> dict[str, bool]:
    """Each flag raised on any rank, for every rank.

    Ranks read their own clocks and signals, but what follows a flag (stopping, the barrier
    after validation, the gather in a checkpoint) is collective: all ranks must take it at the
    same step or the group deadlocks or aborts.
    """
    if world == 1:
        return flags
    t = torch.tensor([1.0 if v else 0.0 for v in flags.values()])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return {k: v > 0 for k, v in zip(flags, t.tolist())}


class _StopRequest:
    """SIGINT/SIGTERM end the run at the next step boundary, after a final checkpoint."""

    def __init__(self) -> None:
        self.flag = False
        self.old: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.old[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.flag:  # a second request: stop now, without the checkpoint
            raise KeyboardInterrupt
        self.flag = True

    def restore(self) -> None:
        for sig, handler in self.old.items():
            signal.signal(sig, handler)


def _ladder(model: HyperpriorModel) -> list[float]:
    """The λ of each level, as logged and checkpointed."""
    return list(ladder(model.levels))


def _fit_moments(opt: torch.optim.Optimizer, levels: int) -> None:
    """After :func:`add_low_levels` grew per-level parameters, grow their Adam moments to match."""
    for group in opt.param_groups:
        for p in group["params"]:
            st = opt.state.get(p, {})
            for k in ("exp_avg", "exp_avg_sq"):
                t = st.get(k)
                if t is not None and t.shape != p.shape:
                    if t.dim() != 2 or t.shape[1:] != p.shape[1:]:
                        raise ValueError(f"optimizer state of shape {tuple(t.shape)} for a {tuple(p.shape)} parameter")
                    st[k] = grow_levels({"gain": t}, levels, moments=True)["gain"]


def train(cfg: TrainConfig, resume: bool = True, progress: bool = True) -> dict[str, Any]:
    """Train (or resume) a model; returns the last validation result.

    Checkpoints go to ``cfg.out/last.pt`` every ``checkpoint_every_s`` seconds and at the
    end; the best validation score to ``cfg.out/best.pt``; a JSON line per ``log_every``
    steps to ``cfg.out/log.jsonl``. With ``resume`` and an existing ``last.pt``, training
    continues from it (model, optimizer, step and RNG state); options given in ``cfg``
    (learning rate, patch size, steps, ...) take effect from there.
    """
    if not (math.isfinite(cfg.level_balance) and 0 <= cfg.level_balance <= 1):
        msg = f"level balance {cfg.level_balance}: expected a number from 0 to 1"
        raise TrainingError(msg)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = _resolve_device(cfg.device)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend)
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
    main = rank == 0
    out_dir = Path(cfg.out)
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)

    precision = resolve_precision(cfg.precision, device)
    if main and cfg.precision == "auto":
        log.info("precision: %s", precision)
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)

    ckpt_path = out_dir / "last.pt"
    ck = None
    if resume and ckpt_path.exists():
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    init_state = load_init_state(cfg.init) if cfg.init and ck is None else None
    n_ch, m_ch = _channels(cfg, ck, init_state)
    cfg = dataclasses.replace(cfg, N=n_ch, M=m_ch)
    # the architecture of the resumed run, else of the --init weights (a checkerboard model trains its
    # transforms, hyperprior and context together), else the hyperprior generation
    source = ck["model"] if ck is not None else init_state
    arch = arch_of_state(source) if source is not None else "mean-scale-hyperprior-gain"
    torch.manual_seed(cfg.seed)
    # channels-last activations: measured 1.3× faster per step here (oneDNN, bf16, 16×128² crops)
    levels = _levels(cfg, ck, init_state)
    _check_level_weights(cfg.level_weights, levels)
    files = list_images(cfg.data)
    train_files, val_files = split_train_val(files, cfg.val_fraction)
    train_imgs = [load_rgb(p) for p in train_files]
    val_imgs = [load_rgb(p) for p in val_files]
    model = build_model(arch, cfg.N, cfg.M, levels).to(device, memory_format=torch.channels_last)
    if main:
        log.info("architecture: %s (N=%d, M=%d)", arch_of(model), cfg.N, cfg.M)
    aux_params = [p for n, p in model.named_parameters() if n.endswith(".quantiles")]
    main_params = [p for n, p in model.named_parameters() if not n.endswith(".quantiles")]
    torch.manual_seed(cfg.seed * 1000 + rank + 1)  # same init on every rank, different noise
    opt = torch.optim.Adam([{"params": main_params, "lr": cfg.lr}, {"params": aux_params, "lr": cfg.aux_lr}])
    scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16" and device.type == "cuda")

    ema: HyperpriorModel | None = None
    step, best, elapsed0 = 0, math.inf, 0.0
    opening: dict[str, int] | None = ck.get("opening") if ck is not None else None  # see open_channels
    warm_start = 0  # the step at which the optimizer started fresh
    gen = torch.Generator().manual_seed(cfg.seed * 1000 + rank)
    sampler = CropSampler(train_imgs, cfg.patch_size, seed=cfg.seed * 1000 + rank)
    if ck is not None:
        model.load_state_dict(grow_levels(ck["model"], model.levels))
        try:
            opt.load_state_dict(ck["optimizer"])
            _fit_moments(opt, model.levels)
            # resumed inside a fresh optimizer's warm-up: finish it
            warm_start = ck.get("warm_start", 0)
        except ValueError:
            log.warning("optimizer state does not fit; starting a fresh optimizer")
            warm_start = ck["step"]
        if cfg.ema_decay and "ema" in ck:
            ema = copy.deepcopy(model)
            ema.load_state_dict(grow_levels(ck["ema"], model.levels))
        step, best, elapsed0 = ck["step"], ck.get("best", math.inf), ck.get("elapsed", 0.0)
        if ck.get("lambdas") != _ladder(model) or ck.get("config", {}).get("level_balance", 0.0) != cfg.level_balance:
            best = math.inf  # validated on another ladder or objective: the scores do not compare
        if ck.get("world", 1) == world and f"rng{rank}" in ck:
            gen.set_state(ck[f"rng{rank}"]["torch"])
            sampler.rng.bit_generator.state = ck[f"rng{rank}"]["numpy"]
            if "global" in ck[f"rng{rank}"]:
                torch.set_rng_state(ck[f"rng{rank}"]["global"])
        log.info("resumed from %s at step %d", ckpt_path, step)
    elif init_state is not None:
        _init_weights(model, init_state, cfg.init, split=cfg.split_noise if cfg.split_units else None)
        step, elapsed0 = cfg.start_step, cfg.start_seconds
        warm_start = step
        old_m = init_state["g_a.6.weight"].shape[0] if "g_a.6.weight" in init_state else model.M
        if cfg.open_channels and old_m < model.M:
            opening = {"from": int(old_m), "start": step}
    # A moving average that starts from trained weights (--init, or a resumed run whose optimizer restarted)
    # keeps averaging through the warm-up; from scratch it follows the live weights until the warm-up ends.
    ema_in_warmup = init_state is not None or warm_start > 0
    ema_in_warmup = ema_in_warmup or bool(ck is not None and ck.get("ema_in_warmup"))
    model.train()
    if cfg.ema_decay and ema is None:
        ema = copy.deepcopy(model)
    if ema is not None:
        ema.eval().requires_grad_(False)
        ema_params = [p for _, p in sorted(ema.named_parameters())]
        live_params = [p for _, p in sorted(model.named_parameters())]

    net: torch.nn.Module = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    def rng_state() -> dict[str, Any]:
        return {"torch": gen.get_state(), "numpy": sampler.rng.bit_generator.state,
                "global": torch.get_rng_state()}

    def save(path: Path) -> None:
        states = [None] * world
        if world > 1:
            dist.all_gather_object(states, rng_state())
        else:
            states = [rng_state()]
        if main:
            ck = {
                "model": model.state_dict(), "optimizer": opt.state_dict(), "step": step,
                **({"ema": ema.state_dict()} if ema is not None else {}),
                "lambdas": _ladder(model),
                "best": best, "elapsed": elapsed0 + time.time() - t_start, "config": dataclasses.asdict(cfg),
                "world": world, "warm_start": warm_start, "opening": opening,
                "ema_in_warmup": ema_in_warmup, **{f"rng{r}": s for r, s in enumerate(states)},
            }
            _atomic_save(ck, path)

    logf = open(out_dir / "log.jsonl", "a") if main else None  # noqa: SIM115
    bar = None
    if main and progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.steps, initial=step, dynamic_ncols=True, mininterval=1 if os.isatty(2) else 60)
    t_start = time.time()
    t_ckpt = t_val = time.time()
    acc: dict[str, float] = {}
    n_acc = 0  # steps summed in acc: fewer than log_every after resuming between two records
    last_val: dict[str, Any] = {}
    stop = _StopRequest()
    try:
        while step < cfg.steps:
            now = time.time()
            ends = _agree({"time": bool(cfg.max_minutes) and now - t_start > cfg.max_minutes * 60,
                           "request": stop.flag}, world)
            if ends["request"]:
                log.info("stopping at step %d on request (SIGINT/SIGTERM)", step)
            if ends["time"] or ends["request"]:
                break
            lr = _lr_at(cfg, step, warm_start)
            opt.param_groups[0]["lr"] = lr
            x = sampler.batch(cfg.batch_size).to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            lv = _sample_levels(cfg, cfg.batch_size, gen, model.levels).to(device)
            with torch.autocast(device_type=device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                out = net(x, lv)
            lam = lambda_at(lv, model.levels)
            r = rd_loss(out, x, lam, cfg.metric, loss_weights(lam, cfg.level_balance), _y_rate_weight(cfg, opening, step, model.M))
            aux = model.aux_loss()
            opt.zero_grad(set_to_none=True)
            scaler.scale(r["loss"] + aux).backward()
            scaler.unscale_(opt)
            gnorm = torch.nn.utils.clip_grad_norm_(main_params, cfg.clip)
            scaler.step(opt)
            scaler.update()
            step += 1
            if ema is not None:
                # from scratch, no averaging over the warm-up: the weights move fast there
                d = 0.0 if step - warm_start < cfg.lr_warmup and not ema_in_warmup else cfg.ema_decay
                torch._foreach_lerp_(ema_params, live_params, 1.0 - d)
            for k, v in (("loss", r["loss"]), ("bpp", r["bpp"]), ("psnr", r["psnr"]), ("aux", aux), ("gnorm", gnorm)):
                v = v.detach()
                acc[k] = acc.get(k, 0.0) + float(v)
            n_acc += 1
            if bar is not None:
                bar.update(1)
            if step % cfg.log_every == 0:
                rec = {k: v / n_acc for k, v in acc.items()}
                acc, n_acc = {}, 0
                rec.update(step=step, lr=lr, patch=cfg.patch_size, time=round(elapsed0 + time.time() - t_start, 1))
                if bar is not None:
                    bar.set_postfix(loss=f"{rec['loss']:.3f}", bpp=f"{rec['bpp']:.3f}", psnr=f"{rec['psnr']:.2f}")
                if logf:
                    logf.write(json.dumps(rec) + "\n")
                    logf.flush()
            now = time.time()
            due = _agree({"val": bool(val_imgs) and now - t_val > cfg.val_every_s,
                          "checkpoint": now - t_ckpt > cfg.checkpoint_every_s}, world)
            if due["val"]:
                t_val = now
                if main:
                    bf16 = amp_dtype is torch.bfloat16
                    last_val = validate(ema if ema is not None else model, val_imgs, device, autocast=bf16,
                                        balance=cfg.level_balance)
                    rec = {"step": step, "val": last_val, "lambdas": _ladder(model), "level_balance": cfg.level_balance}
                    if ema is not None:  # the raw weights too, to see what averaging buys
                        rec["val_raw"] = validate(model, val_imgs, device, autocast=bf16, balance=cfg.level_balance)
                    if logf:
                        logf.write(json.dumps(rec) + "\n")
                        logf.flush()
                    if last_val["objective"] < best:
                        best = last_val["objective"]
                        save(out_dir / "best.pt")
                if world > 1:
                    dist.barrier()
            if due["checkpoint"]:
                t_ckpt = now
                save(ckpt_path)
        save(ckpt_path)
    finally:
        stop.restore()
        if bar is not None:
            bar.close()
        if logf:
            logf.close()
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()
    return last_val
