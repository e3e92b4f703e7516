"""A law preset's fit over its arms (``evaluation.laws``): an output of its own, upstream of the preset's report.

``law.kind: lr_annealing`` fits L(s) = L0 + A*S1^-alpha - C*S2 on the validation curves of the ``fit`` arms (every
seed) and predicts the whole curve of each ``predict`` arm from its schedule alone; ``law.candidates`` are
schedules nobody ran yet, whose predicted final loss the fit states with the command that runs them.
``law.kind: mixture`` fits the target-domain and general losses in the target's mixture ratio and the tokens
trained on the ``fit`` arms' checkpoints, predicts the ``predict`` arms, and states the critical mixture ratio.

The output (``<store>/law_fit/<fingerprint>/``: law.json, law.md, plots) is keyed by the law code, the law spec and
the content hashes of the arms' checkpoint and eval outputs, like a report.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from evaluation import law_plots, laws
from evaluation.compare import ArmRecord, token_weighted_loss
from orchestration.code_identity import combined_version, module_digests
from orchestration.config import ExperimentConfig, load_experiment
from orchestration.experiments import Experiment
from orchestration.lab import lab_for
from orchestration.presets import preset_of
from orchestration.store import Manifest, fingerprint
from training.schedules import Schedule, lr_factor

LAW_MODULES = ("evaluation.laws", "evaluation.law_plots", "orchestration.law_fits")


@dataclass
class LawFit:
    path: str  # relative to the lab home
    content_hash: str
    markdown: str
    plots: list[Path]
    summary: dict  # law.json


def lr_series(cfg: ExperimentConfig) -> list[float]:
    """The learning rate of steps 1..N as training applies it (the step-n update uses the factor at n - 1)."""
    schedule = Schedule.from_train(cfg.train)
    return [cfg.train.lr * lr_factor(schedule, step) for step in range(cfg.train.steps)]


def _inputs(experiment: Experiment, outputs: list | None = None) -> tuple[dict, list, list[str]]:
    """The law, the outputs of the arms it fits and predicts (from ``outputs``, the experiment's arm outputs when
    the caller planned them already), and those still missing."""
    from orchestration.reports import arm_outputs, missing_outputs  # reports reads the law fit: imported late

    law = preset_of(experiment).law
    wanted = set(law["fit"]) | set(law.get("predict", []))
    arms = [arm for arm in outputs or arm_outputs(experiment)
            if experiment_arm(experiment, arm.name).params["arm"] in wanted]
    return law, arms, missing_outputs(arms)


def experiment_arm(experiment: Experiment, name: str):
    return next(arm for arm in experiment.arms if arm.name == name)


def law_fingerprint(experiment: Experiment, law: dict, arms) -> str:
    upstream = {f"{a.name}/{stage}": a.items[stage].manifest.content_hash for a in arms
                for stage in ("checkpoint", "eval")}
    return fingerprint("law_fit", combined_version(module_digests(LAW_MODULES)), {"law": law}, upstream)


def latest_law_fit(experiment: Experiment, outputs: list | None = None) -> Manifest | None:
    """The law fit of the experiment's current outputs, if it was materialized (None also when it has no law)."""
    if not experiment.preset or not preset_of(experiment).law:
        return None
    law, arms, missing = _inputs(experiment, outputs)
    if missing:
        return None
    return lab_for(experiment.arms[0].overrides).store.find("law_fit", law_fingerprint(experiment, law, arms))


def law_dir(experiment: Experiment) -> Path | None:
    manifest = latest_law_fit(experiment)
    store = lab_for(experiment.arms[0].overrides).store
    return store.path("law_fit", manifest.fingerprint) if manifest else None


def materialize_law_fit(experiment: Experiment, dagster_run_id: str, log: Callable[[str], None]) -> LawFit:
    from orchestration.reports import arm_record

    law, arms, missing = _inputs(experiment)
    if missing:
        raise RuntimeError(f"the law fit of {experiment.name} needs its arms' checkpoint and eval; missing: "
                           f"{', '.join(missing)}. Materialize the experiment (`lab preset` or its job) first")
    store = lab_for(experiment.arms[0].overrides).store
    fp = law_fingerprint(experiment, law, arms)
    with store.lease("law_fit", fp, holder=f"dagster run {dagster_run_id}", on_wait=log):
        manifest = store.find("law_fit", fp)
        if manifest is None:
            def build(partial: Path) -> Manifest:
                records = {arm.name: (experiment_arm(experiment, arm.name), arm_record(arm, store)) for arm in arms}
                fit = FITS[law["kind"]](experiment, law, records, partial)
                (partial / "law.json").write_text(json.dumps(fit, indent=2, sort_keys=True) + "\n")
                return Manifest("law_fit", fp, "", "", {"law": law}, {}, fit["headline"],
                                dagster_run_id=dagster_run_id)

            manifest = store.commit("law_fit", fp, build)
    output = store.path("law_fit", fp)
    return LawFit(f"store/law_fit/{fp}", manifest.content_hash, (output / "law.md").read_text(),
                  sorted(output.glob("*.png")), json.loads((output / "law.json").read_text()))


def _val_points(record: ArmRecord) -> dict[int, float]:
    """The validation curve after training began (step 0, the untrained model, is no point of the law)."""
    domains = sorted(record.final)
    return {step: token_weighted_loss(results, domains) for step, results in sorted(record.val_curve.items())
            if step >= 1}


def fit_lr_annealing(experiment: Experiment, law: dict, records: dict, out: Path) -> dict:
    """Fit on the ``fit`` arms' curves (all seeds), predict every ``predict`` arm's curve, rank the candidates."""
    curves = {name: laws.Curve(name, lr_series(load_experiment(arm.overrides)), _val_points(record))
              for name, (arm, record) in records.items()}
    fitted = [curves[n] for n, (arm, _) in records.items() if arm.params["arm"] in law["fit"]]
    held_out = [curves[n] for n, (arm, _) in records.items() if arm.params["arm"] in law.get("predict", [])]
    fit = laws.fit_annealing_law(fitted, min_step=int(law.get("min_step", 1)))
    errors = {curve.name: final_errors(fit, curve) for curve in held_out}
    base = experiment.arms[0].overrides
    candidates = {}
    for name, overrides in law.get("candidates", {}).items():
        cfg = load_experiment([*base, *overrides])
        predicted = fit.predict(lr_series(cfg), [cfg.train.steps])[cfg.train.steps]
        candidates[name] = {"overrides": overrides, "steps": cfg.train.steps, "predicted_final_loss": predicted}
    plots = [law_plots.plot_annealing_fit(fit, [*fitted, *held_out], out / "lr_annealing_fit.png").name]
    worst = max((abs(e["final_relative_error"]) for e in errors.values()), default=None)
    # How much of each fitted curve's final loss the annealing term explains: small at a scale far from convergence.
    annealing = {curve.name: fit.C * float(laws.annealing_areas(curve.lrs, fit.lr_scale, fit.decay)[1][-1])
                 for curve in fitted}
    summary = {"kind": "lr_annealing", "fit": fit.to_json(), "errors": errors, "candidates": candidates,
               "annealing_term": annealing,
               "plots": plots, "headline": {"final_relative_error_max": worst, "criterion": law.get("criterion")}}
    (out / "law.md").write_text(law_markdown_annealing(summary, law))
    return summary


def final_errors(fit: laws.AnnealingFit, curve: laws.Curve) -> dict:
    errors = laws.prediction_errors(fit, curve)
    observed = curve.observed[errors["final_step"]]
    return {**errors, "observed_final": observed, "predicted_final": observed * (1 + errors["final_relative_error"])}


def law_markdown_annealing(summary: dict, law: dict) -> str:
    fit = summary["fit"]
    params = " | ".join(f"{key} = {fit[key]:.4g}" for key in ("L0", "A", "alpha", "C", "decay") if key in fit)
    rows = [f"| {name} | {e['observed_final']:.4f} | {e['predicted_final']:.4f} | {e['final_relative_error']:+.2%} "
            f"| {e['mean_abs_relative_error']:.2%} | {e['max_abs_relative_error']:.2%} |"
            for name, e in sorted(summary["errors"].items())]
    criterion = law.get("criterion")
    worst = summary["headline"]["final_relative_error_max"]
    verdict = "" if criterion is None or worst is None else (
        f"Criterion: the held-out final loss within {criterion:.0%}: **{'met' if worst <= criterion else 'missed'}** "
        f"(worst {worst:.2%}).")
    term = summary["annealing_term"]
    reading = (f"At the end of the fitted runs the annealing term C·S2 is worth "
               f"{min(term.values()):.3f} to {max(term.values()):.3f} nats"
               + (", and L0 sits at its lower bound (0): at this scale the curves are far from an asymptote, so "
                  "the forward area S1 explains most of the curve and the law favours schedules that keep the "
                  "learning rate high." if fit["L0"] < 1e-6 else "."))
    lines = ["## Law fit: LR annealing", "L(s) = L0 + A·S1(s)^(-alpha) - C·S2(s) (S1: the LR's forward area, S2: "
             "its annealing area with momentum; see docs/laws.md).", f"Fitted on {', '.join(law['fit'])} (every "
             f"seed), {len(fit.get('fitted_on', []))} curves: {params}. {reading}",
             "\n".join(["| held-out arm | observed final loss | predicted | error | mean abs. error over the curve "
                        "| max |", "|---|---|---|---|---|---|", *rows]), verdict]
    if summary["candidates"]:
        best = min(summary["candidates"].items(), key=lambda kv: kv[1]["predicted_final_loss"])
        lines += ["Predictions for schedules nobody ran yet (run one as a new arm to test the law):",
                  "\n".join(["| schedule | overrides | predicted final loss |", "|---|---|---|",
                             *(f"| {n} | `{' '.join(c['overrides'])}` | {c['predicted_final_loss']:.4f} |"
                               for n, c in summary["candidates"].items())]),
                  f"Lowest predicted: **{best[0]}**; run it: `lab materialize {' '.join(best[1]['overrides'])}` "
                  "on top of the preset's base overrides."]
    lines += [f"![{Path(p).stem}]({p})" for p in summary["plots"]]
    return "\n\n".join(line for line in lines if line) + "\n"


def mixture_points(law: dict, name: str, arm_overrides: list[str], record: ArmRecord) -> list[laws.MixturePoint]:
    """One point per evaluated checkpoint at or past ``law.min_step``: (target share, tokens, two losses)."""
    cfg = load_experiment(arm_overrides)
    weights = cfg.mixture.weights
    ratio = weights.get(law["target"], 0.0) / sum(weights.values())
    tokens_per_step = cfg.train.global_batch_size * cfg.train.seq_len
    points = []
    for step, results in sorted(record.val_curve.items()):
        if step < int(law.get("min_step", 1)):
            continue
        general = token_weighted_loss(results, sorted(d for d in results if d != law["target"]))
        points.append(laws.MixturePoint(f"{name}@{step}", ratio, step * tokens_per_step,
                                        results[law["target"]]["loss"], general))
    return points


def fit_mixture(experiment: Experiment, law: dict, records: dict, out: Path) -> dict:
    """Fit on the ``fit`` arms' checkpoints, predict the ``predict`` arms', state the critical mixture ratio."""
    points = {name: mixture_points(law, name, arm.overrides, record) for name, (arm, record) in records.items()}
    fitted = [p for n, (arm, _) in records.items() if arm.params["arm"] in law["fit"] for p in points[n]]
    held_out = [p for n, (arm, _) in records.items() if arm.params["arm"] in law.get("predict", []) for p in points[n]]
    fit = laws.fit_mixture_law(fitted)
    budget = max(p.tokens for p in fitted)
    tolerance = float(law["tolerance"])
    cmr = laws.critical_ratio(fit, budget, tolerance)
    errors = laws.held_out_errors(fit, held_out)
    plots = [law_plots.plot_mixture_fit(fit, [*fitted, *held_out], out / "mixture_law_fit.png",
                                        (budget, tolerance)).name]
    worst = max((max(abs(e["target_relative_error"]), abs(e["general_relative_error"])) for e in errors),
                default=None)
    summary = {"kind": "mixture", "fit": fit.to_json(), "errors": errors, "plots": plots,
               "critical_ratio": {"ratio": cmr, "tokens": budget, "tolerance": tolerance, "target": law["target"]},
               "headline": {"held_out_relative_error_max": worst, "critical_ratio": cmr}}
    (out / "law.md").write_text(law_markdown_mixture(summary, law))
    return summary


def law_markdown_mixture(summary: dict, law: dict) -> str:
    fit, cmr = summary["fit"], summary["critical_ratio"]
    params = "; ".join(f"{loss}: " + ", ".join(f"{k} = {v:.4g}" for k, v in fit[loss].items())
                       for loss in ("target", "general"))
    rows = [f"| {e['name']} | {e['ratio']:.3f} | {e['tokens']:,.0f} | {e['target_observed']:.4f} | "
            f"{e['target_predicted']:.4f} ({e['target_relative_error']:+.2%}) | {e['general_observed']:.4f} | "
            f"{e['general_predicted']:.4f} ({e['general_relative_error']:+.2%}) |" for e in summary["errors"]]
    table = "\n".join(["| held-out point | target share | tokens | target loss | predicted | general loss | "
                       "predicted |", "|---|---|---|---|---|---|---|", *rows])
    return "\n\n".join([
        "## Law fit: mixture", "Per loss: L(s, D) = E + A/(s + 0.01)^alpha + B/D^beta, s the loss's own share of the "
        f"mix (the target domain `{law['target']}`: its ratio r; the general domains: 1 - r), D in billions of tokens "
        "(see docs/laws.md).", f"Fitted on {', '.join(law['fit'])} (every seed, every checkpoint from step "
        f"{law.get('min_step', 1)}): {params}.", table,
        f"Critical mixture ratio at {cmr['tokens']:,.0f} tokens for a {cmr['tolerance']:.1%} tolerance on the general "
        f"loss: **r = {cmr['ratio']:.3f}**. Run it as a new arm: `mixture.weights.{law['target']}={cmr['ratio']:.3f}` "
        f"with the other domains scaled to {1 - cmr['ratio']:.3f} in total (the preset's arms show how).",
        *(f"![{Path(p).stem}]({p})" for p in summary["plots"])]) + "\n"


FITS = {"lr_annealing": fit_lr_annealing, "mixture": fit_mixture}
