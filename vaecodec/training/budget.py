"""What the time-budgeted runs (``train --context``, ``train --synthesis``) share.

Their learning rate follows the clock, not the step count: a linear warm-up over the first
``args.warmup`` steps of an optimizer, then a cosine from ``args.lr`` to ``args.lr_min`` over
the whole time budget of the call, so a run ends annealed whatever the machine's speed.
"""

from __future__ import annotations

import argparse
import math
import signal


def budget_lr(args: argparse.Namespace, seconds: float, total: float, warm_steps: int) -> float:
    """The learning rate after ``seconds`` of a ``total``-second budget, ``warm_steps`` into the warm-up."""
    frac = min(1.0, seconds / max(total, 1.0))
    warm = min(1.0, warm_steps / args.warmup)
    return warm * (args.lr_min + 0.5 * (args.lr - args.lr_min) * (1 + math.cos(math.pi * frac)))


def stop_on_sigterm() -> dict[str, bool]:
    """A flag that SIGTERM sets: the run then validates, saves and ends at the next step."""
    stop = {"flag": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(flag=True))
    return stop
