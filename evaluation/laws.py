"""Scaling-law fits over the arms of an experiment: the LR-annealing law and the mixture law with its critical ratio.

LR-annealing law (Tissue et al. 2024, "Scaling Law with Learning Rate Annealing", arXiv 2408.11029):

    L(s) = L0 + A * S1(s)^(-alpha) - C * S2(s)
    S1(s) = sum_{i<=s} eta_i                        forward area
    S2(s) = sum_{i<=s} m_i,  m_i = lambda * m_{i-1} + (eta_{i-1} - eta_i)    annealing area, m_0 = 0

with lambda the decay factor (0.999 in the paper). Two choices are this module's, not the paper's:
- eta is the learning rate divided by a reference LR (the largest LR among the fitted curves, kept in the fit as
  ``lr_scale`` and reused for predictions), so S1 counts "steps at peak LR" and A, C are of order one rather than
  of order 1e3; curves with different peak LRs stay comparable because they share the one reference.
- Warmup does not anneal: the LR increments before a curve first reaches its largest LR are left out of m, so a
  warmup does not add a negative annealing area. Points inside the warmup are not fitted either (the law does not
  hold there); ``min_step`` skips more.

Mixture law, a small form of the D-CPT law (Que et al. 2024, arXiv 2406.01375) at one model size:

    L(s, D) = E + A / (s + eps)^alpha + B / D^beta

fitted once for the target-domain loss and once for the general loss. s is the share of the loss's own corpus in the
mix: the target ratio r for the target loss, 1 - r for the general loss (so general loss rises as r grows); eps =
RATIO_EPS keeps a share of 0 finite, as D-CPT's epsilon does; D is in billions of tokens. D-CPT's full form couples
ratio and tokens (B * r^eta / D^beta) and adds a model-size term; neither is fitted here.

Critical mixture ratio (Gu et al. 2024, "CMR Scaling Law", arXiv 2407.17467): the largest target ratio r whose
predicted general loss at a token budget stays within (1 + tolerance) of a reference. CMR's reference is the general
loss before continual pretraining (pass it as ``reference_loss``); without it, the reference is the predicted
general loss at the grid's smallest ratio (r = 0 by default: general data only, at the same budget).

Fits are deterministic (fixed starting points, no randomness): the same inputs give the same floats.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy.optimize import least_squares
from scipy.signal import lfilter

ANNEALING_PARAMS = 4  # L0, A, alpha, C
MIXTURE_PARAMS = 5  # E, A, alpha, B, beta
RATIO_EPS = 0.01
TOKENS_UNIT = 1e9  # D in the mixture law is in billions of tokens
DEFAULT_RATIO_GRID = tuple(i / 1000 for i in range(1001))


# ---------------------------------------------------------------------------------------------- LR-annealing law


@dataclass
class Curve:
    """One arm's learning-rate series (lrs[i] is the LR of step i + 1) and its validation loss at checkpoints."""

    name: str
    lrs: list[float]
    observed: dict[int, float]  # step -> validation loss


def warmup_end(lrs: Sequence[float]) -> int:
    """The first step (1-based) at which the LR reaches its largest value: the end of warmup."""
    return int(np.argmax(np.asarray(lrs, dtype=float))) + 1


def annealing_areas(lrs: Sequence[float], lr_scale: float, decay: float) -> tuple[np.ndarray, np.ndarray]:
    """S1 and S2 after each step (index i is step i + 1), for LRs divided by ``lr_scale``."""
    eta = np.asarray(lrs, dtype=float) / lr_scale
    drops = np.zeros_like(eta)
    drops[1:] = eta[:-1] - eta[1:]
    drops[: warmup_end(lrs)] = 0.0  # increments up to the peak are warmup, not annealing
    momentum = lfilter([1.0], [1.0, -decay], drops)  # m_i = decay * m_{i-1} + drop_i
    return np.cumsum(eta), np.cumsum(momentum)


def _annealing_law(params: np.ndarray, s1: np.ndarray, s2: np.ndarray) -> np.ndarray:
    l0, a, alpha, c = params
    return l0 + a * s1 ** (-alpha) - c * s2


def _fit_points(curve: Curve, min_step: int) -> list[int]:
    """The observed steps of a curve that the law should describe: past its warmup and at or after min_step."""
    if not curve.lrs or max(curve.lrs) <= 0:
        raise ValueError(f"curve {curve.name!r} needs the (positive) LR of each of its steps; got {len(curve.lrs)} LRs")
    bad = [s for s in curve.observed if not 1 <= s <= len(curve.lrs)]
    if bad:
        raise ValueError(f"curve {curve.name!r} has losses at steps {bad} outside its {len(curve.lrs)} LR steps: "
                         "pass the LR of every step up to the last checkpoint")
    first = max(min_step, warmup_end(curve.lrs) + 1)
    return sorted(s for s in curve.observed if s >= first)


@dataclass
class AnnealingFit:
    L0: float
    A: float
    alpha: float
    C: float
    decay: float
    lr_scale: float  # the LR that counts as eta = 1
    min_step: int
    fitted_on: list[str]
    residuals: dict[str, dict[int, float]] = field(default_factory=dict)  # curve -> step -> observed - fitted

    def predict(self, lrs: Sequence[float], steps: Sequence[int]) -> dict[int, float]:
        """The law's loss after each of ``steps`` (1-based) of a run with per-step learning rates ``lrs``."""
        s1, s2 = annealing_areas(lrs, self.lr_scale, self.decay)
        index = np.asarray(steps, dtype=int) - 1
        losses = _annealing_law(np.array([self.L0, self.A, self.alpha, self.C]), s1[index], s2[index])
        return {int(step): float(loss) for step, loss in zip(steps, losses, strict=True)}

    def to_json(self) -> dict:
        data = asdict(self)
        data["residuals"] = {name: {str(s): r for s, r in res.items()} for name, res in self.residuals.items()}
        return data

    @classmethod
    def from_json(cls, data: dict) -> AnnealingFit:
        residuals = {name: {int(s): r for s, r in res.items()} for name, res in data["residuals"].items()}
        return cls(**{**data, "residuals": residuals})


def fit_annealing_law(curves: list[Curve], decay: float = 0.999, min_step: int = 1) -> AnnealingFit:
    """Least-squares fit of L0, A, alpha, C on the relative errors of every curve's points past warmup.

    Several fixed starting points (alpha 0.3 to 1.0, L0 below the lowest loss) are tried and the best kept;
    bounds keep L0, A, C >= 0 and 0 <= alpha <= 3. At least one curve should anneal, or C stays at 0.
    """
    steps_by_curve = {c.name: _fit_points(c, min_step) for c in curves}
    total = sum(len(steps) for steps in steps_by_curve.values())
    if total < ANNEALING_PARAMS + 1:
        counts = ", ".join(f"{name}: {len(steps)}" for name, steps in steps_by_curve.items()) or "no curves"
        raise ValueError(f"the annealing law has {ANNEALING_PARAMS} parameters and needs at least "
                         f"{ANNEALING_PARAMS + 1} points past warmup and at or after step {min_step}; got {total} "
                         f"({counts}): evaluate more checkpoints or add curves")
    lr_scale = max(max(c.lrs) for c in curves)
    s1, s2, loss = [], [], []
    for curve in curves:
        areas = annealing_areas(curve.lrs, lr_scale, decay)
        index = np.asarray(steps_by_curve[curve.name], dtype=int) - 1
        s1.append(areas[0][index])
        s2.append(areas[1][index])
        loss.append([curve.observed[s] for s in steps_by_curve[curve.name]])
    s1, s2, loss = np.concatenate(s1), np.concatenate(s2), np.concatenate(loss, dtype=float)

    def relative_error(params: np.ndarray) -> np.ndarray:
        return _annealing_law(params, s1, s2) / loss - 1.0

    best = None
    for alpha in (0.3, 0.5, 1.0):
        l0 = 0.8 * loss.min()
        a = max(loss.max() - l0, 1e-3) * s1.min() ** alpha  # the first point starts on the curve
        result = least_squares(relative_error, [l0, a, alpha, 0.0], bounds=([0, 0, 0, 0], [np.inf, np.inf, 3, np.inf]),
                               x_scale="jac", method="trf", xtol=1e-12, ftol=1e-12, gtol=1e-12, max_nfev=5000)
        if best is None or result.cost < best.cost:
            best = result
    fit = AnnealingFit(*(float(p) for p in best.x), decay=decay, lr_scale=float(lr_scale), min_step=min_step,
                       fitted_on=[c.name for c in curves])
    for curve in curves:
        predicted = fit.predict(curve.lrs, steps_by_curve[curve.name])
        fit.residuals[curve.name] = {s: float(curve.observed[s] - p) for s, p in predicted.items()}
    return fit


def prediction_errors(fit: AnnealingFit, curve: Curve) -> dict:
    """Relative errors (predicted / observed - 1) of the fit on a curve's points past warmup and ``fit.min_step``."""
    steps = _fit_points(curve, fit.min_step)
    if not steps:
        raise ValueError(f"curve {curve.name!r} has no loss past its warmup (step {warmup_end(curve.lrs)}) and at or "
                         f"after step {fit.min_step}: evaluate it at later checkpoints")
    predicted = fit.predict(curve.lrs, steps)
    errors = {s: predicted[s] / curve.observed[s] - 1.0 for s in steps}
    magnitudes = [abs(e) for e in errors.values()]
    return {"curve": curve.name, "relative_error": errors, "final_step": steps[-1],
            "final_relative_error": errors[steps[-1]], "max_abs_relative_error": max(magnitudes),
            "mean_abs_relative_error": sum(magnitudes) / len(magnitudes)}


# ------------------------------------------------------------------------------------------------ mixture law


@dataclass
class MixturePoint:
    """One trained arm (or checkpoint): target-domain ratio of the mix, tokens trained, and its two losses."""

    name: str
    ratio: float
    tokens: float
    target_loss: float
    general_loss: float


@dataclass
class LawParams:
    """L(s, D) = E + A / (s + RATIO_EPS)^alpha + B / (D / TOKENS_UNIT)^beta, s the loss's own corpus share."""

    E: float
    A: float
    alpha: float
    B: float
    beta: float

    def loss(self, share: float | np.ndarray, tokens: float | np.ndarray) -> float | np.ndarray:
        return (self.E + self.A / (np.asarray(share) + RATIO_EPS) ** self.alpha
                + self.B / (np.asarray(tokens) / TOKENS_UNIT) ** self.beta)


@dataclass
class MixtureFit:
    target: LawParams
    general: LawParams
    fitted_on: list[str]
    residuals: dict[str, dict[str, float]] = field(default_factory=dict)  # point -> {"target", "general"}: obs - fit

    def predict(self, ratio: float, tokens: float) -> tuple[float, float]:
        """(target loss, general loss) predicted for a target ratio ``ratio`` trained on ``tokens`` tokens."""
        return float(self.target.loss(ratio, tokens)), float(self.general.loss(1.0 - ratio, tokens))

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> MixtureFit:
        return cls(**{**data, "target": LawParams(**data["target"]), "general": LawParams(**data["general"])})


def _fit_law(share: np.ndarray, tokens: np.ndarray, loss: np.ndarray) -> LawParams:
    """Least squares on relative errors from a few fixed starting points; every parameter >= 0, exponents <= 3."""

    def relative_error(params: np.ndarray) -> np.ndarray:
        return LawParams(*params).loss(share, tokens) / loss - 1.0

    best = None
    for alpha in (0.2, 0.5, 1.0):
        for beta in (0.2, 0.5):
            spread = max(loss.max() - loss.min(), 1e-3)
            start = [0.8 * loss.min(), spread / 2, alpha, spread / 2, beta]
            result = least_squares(relative_error, start, bounds=([0] * 5, [np.inf, np.inf, 3, np.inf, 3]),
                                   x_scale="jac", method="trf", xtol=1e-12, ftol=1e-12, gtol=1e-12, max_nfev=5000)
            if best is None or result.cost < best.cost:
                best = result
    return LawParams(*(float(p) for p in best.x))


def fit_mixture_law(points: list[MixturePoint]) -> MixtureFit:
    """Fit the target-loss and general-loss laws on ``points`` (pass only the points that are not held out)."""
    ratios, budgets = sorted({p.ratio for p in points}), sorted({p.tokens for p in points})
    if len(points) < MIXTURE_PARAMS + 1 or len(ratios) < 3 or len(budgets) < 2:
        raise ValueError(f"the mixture law has {MIXTURE_PARAMS} parameters per loss and needs at least "
                         f"{MIXTURE_PARAMS + 1} points over at least 3 ratios and 2 token budgets; got {len(points)} "
                         f"points, ratios {ratios}, token budgets {budgets}: add arms or evaluated checkpoints")
    bad = [p.name for p in points if not 0.0 <= p.ratio <= 1.0 or p.tokens <= 0]
    if bad:
        raise ValueError(f"points {bad} need a ratio in [0, 1] and a positive token count")
    ratio = np.array([p.ratio for p in points])
    tokens = np.array([p.tokens for p in points])
    target = _fit_law(ratio, tokens, np.array([p.target_loss for p in points]))
    general = _fit_law(1.0 - ratio, tokens, np.array([p.general_loss for p in points]))
    fit = MixtureFit(target=target, general=general, fitted_on=[p.name for p in points])
    for p in points:
        target_loss, general_loss = fit.predict(p.ratio, p.tokens)
        fit.residuals[p.name] = {"target": p.target_loss - target_loss, "general": p.general_loss - general_loss}
    return fit


def held_out_errors(fit: MixtureFit, points: list[MixturePoint]) -> list[dict]:
    """Per point: observed and predicted losses and relative errors (predicted / observed - 1) of both laws."""
    rows = []
    for p in points:
        target_loss, general_loss = fit.predict(p.ratio, p.tokens)
        rows.append({"name": p.name, "ratio": p.ratio, "tokens": p.tokens,
                     "target_observed": p.target_loss, "target_predicted": target_loss,
                     "target_relative_error": target_loss / p.target_loss - 1.0,
                     "general_observed": p.general_loss, "general_predicted": general_loss,
                     "general_relative_error": general_loss / p.general_loss - 1.0})
    return rows


def critical_ratio(fit: MixtureFit, tokens: float, tolerance: float, grid: Sequence[float] = DEFAULT_RATIO_GRID,
                   reference_loss: float | None = None) -> float:
    """The largest ratio in ``grid`` whose predicted general loss at ``tokens`` is <= (1 + tolerance) * reference.

    The reference is ``reference_loss`` (CMR's: the general loss before continual pretraining) or, without it, the
    predicted general loss at the smallest ratio of the grid.
    """
    ratios = np.sort(np.asarray(grid, dtype=float))
    general = fit.general.loss(1.0 - ratios, tokens)
    reference = float(general[0]) if reference_loss is None else reference_loss
    feasible = ratios[general <= (1.0 + tolerance) * reference]
    if feasible.size == 0:
        raise ValueError(f"no ratio in the grid keeps the predicted general loss at {tokens:.3g} tokens within "
                         f"{tolerance:.1%} of {reference:.4f} (at the smallest ratio it is {general[0]:.4f}): "
                         "raise the tolerance or the token budget")
    return float(feasible.max())
