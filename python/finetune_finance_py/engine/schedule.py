"""LrSchedule.ts in Python: the multiplier of the peak rate after `step` optimizer updates (HF's definitions)."""
import math


def lr_multiplier(kind: str, warmup: int, total: int, step: int) -> float:
    if step < warmup:
        return step / max(1, warmup)
    if kind == "constant":
        return 1.0
    if kind == "linear":
        return max(0.0, (total - step) / max(1, total - warmup))
    progress = (step - warmup) / max(1, total - warmup)
    return max(0.0, 0.5 * (1 + math.cos(math.pi * 0.5 * 2 * progress)))


def lr_at(schedule: dict, step: int) -> float:
    return schedule["peak"] * lr_multiplier(schedule["type"], schedule["warmupSteps"], schedule["totalSteps"], step)


def mix_seed(seed: int, step: int, micro: int, rank: int) -> int:
    """A per-(step, micro-batch, rank) seed: dropout masks depend on the position in the run only, so a resumed run
    draws the masks an uninterrupted one draws."""
    x = (seed + 1) * 0x27D4EB2F ^ (step + 1) * 0x165667B1 ^ (micro + 1) * 0x9E3779B1 ^ (rank + 1) * 0x85EBCA6B
    return x & 0xFFFFFFFF
