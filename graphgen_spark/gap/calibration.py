"""Binned Expected Calibration Error, MCE and Brier score (method.md §5.5).

Confidence c = max(p_yes, 1 − p_yes) ∈ [0.5, 1]; prediction yes iff p_yes ≥ 0.5. Bin k of
B equal-width bins holds ((k−1)/B, k/B]; the 1e-9 keeps exact boundaries in the lower bin
despite floating-point error. ECE = Σ |S_k|/N · |acc_k − conf_k| over non-empty bins.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field


def bin_index(confidence: float, bins: int) -> int:
    return max(1, math.ceil(confidence * bins - 1e-9))


@dataclass
class Bin:
    k: int
    lo: float
    hi: float
    count: int = 0
    acc: float = 0.0
    conf: float = 0.0


@dataclass
class Calibration:
    n: int
    ece: float
    mce: float
    brier: float
    bins: list[Bin] = field(default_factory=list)


def calibrate(items: Iterable[tuple[float, bool]], bins: int = 10) -> Calibration:
    """``items``: (p_yes, label_is_yes) per ok judgement."""
    sums: dict[int, list[float]] = {}
    n = 0
    brier = 0.0
    for p_yes, label in items:
        n += 1
        conf = max(p_yes, 1.0 - p_yes)
        correct = (p_yes >= 0.5) == bool(label)
        k = bin_index(conf, bins)
        s = sums.setdefault(k, [0, 0.0, 0.0])
        s[0] += 1
        s[1] += 1.0 if correct else 0.0
        s[2] += conf
        brier += (p_yes - (1.0 if label else 0.0)) ** 2
    out = []
    ece = mce = 0.0
    for k in range(1, bins + 1):
        b = Bin(k, (k - 1) / bins, k / bins)
        if k in sums:
            cnt, acc, conf = sums[k]
            b.count, b.acc, b.conf = int(cnt), acc / cnt, conf / cnt
            gap = abs(b.acc - b.conf)
            ece += cnt / n * gap
            mce = max(mce, gap)
        out.append(b)
    return Calibration(n=n, ece=ece, mce=mce, brier=brier / n if n else 0.0, bins=out)
