"""The scaling-law fits of evaluation.laws on synthetic data drawn from known parameters (seeded noise, no training)."""

import json
import math

import numpy as np
import pytest

from evaluation.law_plots import plot_annealing_fit, plot_mixture_fit
from evaluation.laws import (
    AnnealingFit,
    Curve,
    LawParams,
    MixtureFit,
    MixturePoint,
    annealing_areas,
    critical_ratio,
    fit_annealing_law,
    fit_mixture_law,
    held_out_errors,
    prediction_errors,
)

STEPS, PEAK, WARMUP = 300, 3e-3, 20
TRUE_ANNEALING = AnnealingFit(L0=2.0, A=1.5, alpha=0.5, C=1e-3, decay=0.999, lr_scale=PEAK, min_step=1, fitted_on=[])


def warmup(step: int) -> float:
    return PEAK * step / WARMUP


def constant_lrs() -> list[float]:
    return [warmup(s) if s < WARMUP else PEAK for s in range(1, STEPS + 1)]


def cosine_lrs() -> list[float]:
    def lr(s: int) -> float:
        return PEAK * (0.1 + 0.45 * (1 + math.cos(math.pi * (s - WARMUP) / (STEPS - WARMUP))))
    return [warmup(s) if s < WARMUP else lr(s) for s in range(1, STEPS + 1)]


def wsd_lrs(decay_from: int = 240) -> list[float]:
    def lr(s: int) -> float:
        return PEAK if s <= decay_from else PEAK * (STEPS - s) / (STEPS - decay_from)
    return [warmup(s) if s < WARMUP else lr(s) for s in range(1, STEPS + 1)]


def synthetic_curves(noise: float = 0.001) -> dict[str, Curve]:
    """The three schedules' losses from TRUE_ANNEALING every 20 steps, times (1 + noise * N(0, 1))."""
    rng = np.random.default_rng(0)
    curves = {}
    for name, lrs in (("constant", constant_lrs()), ("cosine", cosine_lrs()), ("wsd", wsd_lrs())):
        clean = TRUE_ANNEALING.predict(lrs, list(range(20, STEPS + 1, 20)))
        curves[name] = Curve(name, lrs, {s: loss * (1 + noise * rng.standard_normal()) for s, loss in clean.items()})
    return curves


def test_annealing_areas_follow_the_paper_momentum_and_skip_warmup():
    s1, s2 = annealing_areas([1.0, 2.0, 2.0, 1.0, 1.0], lr_scale=2.0, decay=0.5)
    assert s1.tolist() == [0.5, 1.5, 2.5, 3.0, 3.5]
    # the rise 0.5 -> 1 is warmup (no negative area); then m = 0, 0.5, 0.25 after the drop at step 4
    assert s2.tolist() == [0.0, 0.0, 0.0, 0.5, 0.75]


@pytest.mark.parametrize("held_out", ["constant", "cosine", "wsd"])
def test_two_schedules_predict_the_third_final_loss_within_one_percent(held_out):
    curves = synthetic_curves()
    fit = fit_annealing_law([c for name, c in curves.items() if name != held_out])
    errors = prediction_errors(fit, curves[held_out])
    assert errors["final_step"] == STEPS
    assert abs(errors["final_relative_error"]) < 0.01
    assert errors["max_abs_relative_error"] < 0.01
    assert set(fit.residuals) == set(fit.fitted_on) and held_out not in fit.fitted_on


def test_annealing_parameters_are_recovered_and_the_fit_is_deterministic():
    curves = list(synthetic_curves(noise=0.0005).values())
    fit = fit_annealing_law(curves)
    assert fit.L0 == pytest.approx(2.0, rel=0.02)
    assert fit.A == pytest.approx(1.5, rel=0.15)
    assert fit.alpha == pytest.approx(0.5, rel=0.1)
    assert fit.C == pytest.approx(1e-3, rel=0.1)
    assert fit_annealing_law(curves) == fit
    assert AnnealingFit.from_json(json.loads(json.dumps(fit.to_json()))) == fit


def test_an_annealing_law_without_an_annealing_curve_cannot_predict_the_anneal():
    """Every test must be able to fail: fitting on the constant curve alone leaves C near 0 and misses the WSD end."""
    curves = synthetic_curves()
    fit = fit_annealing_law([curves["constant"]])
    assert fit.C < 1e-6
    assert abs(prediction_errors(fit, curves["wsd"])["final_relative_error"]) > 0.01


def test_too_few_annealing_points_name_the_curves_and_the_count():
    lrs = constant_lrs()
    few = [Curve("a", lrs, {10: 3.0, 40: 2.3, 60: 2.2}), Curve("b", lrs, {80: 2.1})]  # step 10 is inside warmup
    with pytest.raises(ValueError, match=r"at least 5 points .* got 3 \(a: 2, b: 1\)"):
        fit_annealing_law(few)
    with pytest.raises(ValueError, match="outside its 300 LR steps"):
        fit_annealing_law([Curve("c", lrs, {400: 2.0})])
    with pytest.raises(ValueError, match="positive"):
        fit_annealing_law([Curve("d", [], {})])


TRUE_TARGET = LawParams(E=1.8, A=0.3, alpha=0.4, B=0.5, beta=0.3)
TRUE_GENERAL = LawParams(E=2.2, A=0.1, alpha=0.6, B=0.4, beta=0.3)
RATIOS, BUDGETS = (0.05, 0.1, 0.2, 0.35, 0.5, 0.7, 0.9), (0.5e9, 1e9, 2e9)


def synthetic_grid(noise: float = 0.001) -> list[MixturePoint]:
    truth, rng = MixtureFit(TRUE_TARGET, TRUE_GENERAL, []), np.random.default_rng(1)
    points = []
    for ratio in RATIOS:
        for tokens in BUDGETS:
            target, general = truth.predict(ratio, tokens)
            target, general = (loss * (1 + noise * rng.standard_normal()) for loss in (target, general))
            points.append(MixturePoint(f"r{ratio}-{tokens:g}", ratio, tokens, target, general))
    return points


def test_mixture_law_recovers_parameters_and_predicts_held_out_points():
    points = synthetic_grid()
    held = [p for p in points if p.ratio == 0.35 or (p.ratio == 0.7 and p.tokens == 2e9)]
    fit = fit_mixture_law([p for p in points if p not in held])
    for fitted, true in ((fit.target, TRUE_TARGET), (fit.general, TRUE_GENERAL)):
        assert fitted.E == pytest.approx(true.E, rel=0.05)
        assert fitted.beta == pytest.approx(true.beta, rel=0.2)
    assert fit.target.alpha == pytest.approx(TRUE_TARGET.alpha, rel=0.2)
    rows = held_out_errors(fit, held)
    assert [row["name"] for row in rows] == [p.name for p in held]
    assert max(abs(row[k]) for row in rows for k in ("target_relative_error", "general_relative_error")) < 0.005
    assert MixtureFit.from_json(json.loads(json.dumps(fit.to_json()))) == fit
    assert fit_mixture_law([p for p in points if p not in held]) == fit


def test_critical_ratio_grows_with_tolerance_and_respects_the_reference():
    fit = MixtureFit(TRUE_TARGET, TRUE_GENERAL, [])
    ratios = [critical_ratio(fit, 2e9, tolerance) for tolerance in (0.0, 0.005, 0.01, 0.02, 0.05)]
    assert ratios[0] == 0.0 and ratios == sorted(ratios) and len(set(ratios)) == len(ratios)
    ratio = critical_ratio(fit, 2e9, 0.01)
    assert fit.predict(ratio, 2e9)[1] <= 1.01 * fit.predict(0.0, 2e9)[1] < fit.predict(ratio + 0.001, 2e9)[1]
    with pytest.raises(ValueError, match="raise the tolerance"):
        critical_ratio(fit, 2e9, 0.01, reference_loss=1.0)


def test_too_few_mixture_points_say_what_is_needed():
    points = [p for p in synthetic_grid() if p.tokens == 1e9]
    with pytest.raises(ValueError, match="at least 3 ratios and 2 token budgets"):
        fit_mixture_law(points)


def test_plots_are_written_and_byte_identical(tmp_path):
    curves = synthetic_curves()
    annealing = fit_annealing_law([curves["constant"], curves["cosine"]])
    points = synthetic_grid()
    mixture = fit_mixture_law([p for p in points if p.ratio != 0.35])
    for name in ("one", "two"):
        plot_annealing_fit(annealing, list(curves.values()), tmp_path / f"annealing-{name}.png")
        plot_mixture_fit(mixture, points, tmp_path / f"mixture-{name}.png", cmr=(2e9, 0.01))
    for kind in ("annealing", "mixture"):
        first, second = (tmp_path / f"{kind}-{name}.png" for name in ("one", "two"))
        assert first.stat().st_size > 10_000 and first.read_bytes() == second.read_bytes()
