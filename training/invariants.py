"""What a researcher trusts about a training run, as a pure check: the loss stayed finite and fell."""

from __future__ import annotations

import math


def loss_finite_and_fell(losses: dict[int, float]) -> tuple[bool, bool, dict]:
    """(finite, fell, numbers) over the logged loss by step: finite at every step, and the final below the first."""
    steps = sorted(losses)
    nonfinite = [step for step in steps if not math.isfinite(losses[step])]
    first, final = (losses[steps[0]], losses[steps[-1]]) if steps else (math.nan, math.nan)
    fell = not nonfinite and len(steps) > 1 and final < first
    numbers = {"logged_steps": len(steps), "first_loss": first, "final_loss": final,
               "nonfinite_steps": nonfinite[:20], "nonfinite_count": len(nonfinite)}
    return bool(steps) and not nonfinite, fell, numbers
