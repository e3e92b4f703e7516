"""The comparison report of one experiment group: every arm's curves, final losses and tokens to a target.

An arm is one run of the group (a checkpoint and its eval); its ``params`` are its config differences from the
group's common config. Arms that differ only in seed keys (``train.seed`` and the like) form one *setting*; the
seeds of a setting give the spread shown as error bars. The validation loss of an arm at a step is the
token-weighted mean over the domains every arm evaluates (all of them, when no domain is shared), so that arms
are compared on the same data. The report is written as ``comparison.md``, ``comparison.json`` and PNG figures,
with no timestamps: equal inputs give equal bytes.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from evaluation import compare_plots

SPREAD = "sample standard deviation across seeds (ddof=1)"
Curve = list[tuple[int, float]]  # (tokens trained, loss), in token order


@dataclass
class ArmRecord:
    name: str  # the arm's label, e.g. "docs=0.3 seed=1"
    params: dict[str, object]  # config differences from the group's common config, dotted keys
    seed: int
    tokens_per_step: int  # global_batch_size * seq_len
    train_curve: dict[int, dict]  # step -> row of train_steps.jsonl
    val_curve: dict[int, dict[str, dict]]  # step -> domain -> {"loss", "bits_per_byte", "tokens"}
    final: dict[str, dict]  # domain -> {"loss", "bits_per_byte", "tokens", ...}
    results: dict[str, float]  # headline numbers for the table (final_loss, tokens_per_second, ...)


@dataclass
class Comparison:
    markdown: str  # the whole report, as written to comparison.md
    table_markdown: str  # the arms table alone: every arm, its config differences and its results
    plots: list[str]  # PNG paths relative to the output folder
    summary: dict  # JSON-able, as written to comparison.json


def load_arm(name: str, params: dict[str, object], seed: int, tokens_per_step: int, checkpoint_dir: Path,
             eval_dir: Path, results: dict[str, float] | None = None) -> ArmRecord:
    """An arm from a ``checkpoint`` output (train_steps.jsonl) and its ``eval`` output (eval.json)."""
    # Imported here: the step log's module brings torch and torchtitan, which the comparison itself never needs.
    from training.outputs import step_log

    evaluation = json.loads((Path(eval_dir) / "eval.json").read_text())
    return ArmRecord(
        name=name, params=dict(params), seed=seed, tokens_per_step=tokens_per_step,
        train_curve=step_log(checkpoint_dir),
        val_curve={int(step): domains for step, domains in evaluation["by_step"].items()},
        final=evaluation["final"], results=dict(results or {}),
    )


def is_seed_key(key: str) -> bool:
    """``train.seed``, ``data.shuffle_seed``, ``seed``: keys that repeat a setting rather than change it."""
    return key.rsplit(".", 1)[-1].endswith("seed")


def swept_keys(arms: list[ArmRecord]) -> list[str]:
    """The params keys whose value (or presence) differs between arms, seed keys excluded."""
    keys = sorted({key for arm in arms for key in arm.params if not is_seed_key(key)})
    # repr, so that unhashable values (lists) compare too
    return [key for key in keys if len({(key in a.params, repr(a.params.get(key))) for a in arms}) > 1]


def token_weighted_loss(results: dict[str, dict], domains: list[str]) -> float | None:
    """Mean loss per token over those of ``domains`` in ``results``; None when none is there."""
    present = [results[d] for d in domains if d in results]
    tokens = sum(r["tokens"] for r in present)
    return sum(r["loss"] * r["tokens"] for r in present) / tokens if tokens else None


def validation_curve(arm: ArmRecord, domains: list[str]) -> Curve:
    curve = [(step * arm.tokens_per_step, token_weighted_loss(arm.val_curve[step], domains))
             for step in sorted(arm.val_curve)]
    return [(tokens, loss) for tokens, loss in curve if loss is not None]


def mean_curve(curves: list[Curve]) -> Curve:
    """The mean of several curves at the token counts where all of them were evaluated."""
    lookups = [dict(curve) for curve in curves]
    shared = set.intersection(*(set(lookup) for lookup in lookups))
    return [(tokens, statistics.fmean(lookup[tokens] for lookup in lookups)) for tokens in sorted(shared)]


def tokens_to_target(curve: Curve, target: float) -> float | None:
    """Tokens at which the curve first gets down to ``target``, linearly interpolated between the two evaluations
    around the crossing; None when it never does (never an extrapolated number)."""
    previous = None
    for tokens, loss in curve:
        if loss <= target:
            if previous is None:
                return float(tokens)
            tokens_before, loss_before = previous
            return tokens_before + (loss_before - target) / (loss_before - loss) * (tokens - tokens_before)
        previous = (tokens, loss) if math.isfinite(loss) else None
    return None


def spread(values: list[float]) -> dict | None:
    """Mean, sample standard deviation (None for one value) and count; None for no values."""
    if not values:
        return None
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else None,
            "n": len(values)}


def _value(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _numeric(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def group_settings(arms: list[ArmRecord], keys: list[str]) -> list[dict]:
    """Arms with equal swept values, in order of first appearance (of the value, when one key is numeric)."""
    settings: dict[str, dict] = {}
    for arm in arms:
        values = {key: arm.params.get(key) for key in keys}
        label = ", ".join(f"{key}={_value(arm.params.get(key, '(unset)'))}" for key in keys) or "all arms"
        settings.setdefault(label, {"label": label, "params": values, "arms": []})["arms"].append(arm.name)
    ordered = list(settings.values())
    numeric = len(keys) == 1 and all(_numeric(s["params"][keys[0]]) for s in ordered)
    for setting in ordered:
        setting["x"] = setting["params"][keys[0]] if numeric else None
    return sorted(ordered, key=lambda s: s["x"]) if numeric else ordered


def _check(arms: list[ArmRecord], baseline: str | None) -> None:
    names = [arm.name for arm in arms]
    if not arms:
        raise ValueError("no arms to compare")
    if len(set(names)) < len(names):
        raise ValueError(f"arm names must be unique: {names}")
    if baseline is not None and baseline not in names:
        raise ValueError(f"baseline {baseline!r} is not an arm; the arms are {names}")
    if empty := [arm.name for arm in arms if not arm.final]:
        raise ValueError(f"arms without final eval results: {empty}")


def _speedup(settings: list[dict], curves: dict[str, Curve], final_loss: dict[str, float], baseline: str | None,
             target_loss: float | None) -> dict | None:
    """The target loss, where it comes from, and the tokens the baseline setting takes to reach it."""
    if baseline is None and target_loss is None:
        return None
    section: dict = {"baseline": baseline, "target_loss": target_loss, "target_from": "given"}
    if baseline is not None:
        reference = next(s for s in settings if baseline in s["arms"])
        if target_loss is None:
            section["target_loss"] = statistics.fmean(final_loss[name] for name in reference["arms"])
            section["target_from"] = "baseline final validation loss"
        section["baseline_setting"] = reference["label"]
        section["baseline_arms"] = reference["arms"]
        section["baseline_tokens"] = tokens_to_target(
            mean_curve([curves[name] for name in reference["arms"]]), section["target_loss"])
    return section


def _ratio(tokens: float | None, speedup: dict) -> float | None:
    base = speedup.get("baseline_tokens")
    return tokens / base if tokens is not None and base else None


def summarize(arms: list[ArmRecord], baseline: str | None = None, target_loss: float | None = None) -> dict:
    """Every number of the report, per arm and per setting (mean and spread over its seeds)."""
    domains = sorted({domain for arm in arms for domain in arm.final})
    shared = [d for d in domains if all(d in arm.final for arm in arms)] or domains
    keys = swept_keys(arms)
    settings = group_settings(arms, keys)
    curves = {arm.name: validation_curve(arm, shared) for arm in arms}
    final_loss = {arm.name: token_weighted_loss(arm.final, shared) for arm in arms}
    speedup = _speedup(settings, curves, final_loss, baseline, target_loss)
    by_name = {arm.name: arm for arm in arms}
    setting_of = {name: s["label"] for s in settings for name in s["arms"]}
    rows = []
    for arm in arms:
        row = {"name": arm.name, "setting": setting_of[arm.name], "params": arm.params, "seed": arm.seed,
               "final_val_loss": final_loss[arm.name], "results": arm.results,
               "final": {d: {m: arm.final[d].get(m) for m in ("loss", "bits_per_byte", "bits_per_byte_ci95")}
                         for d in arm.final}}
        if speedup:
            row["tokens_to_target"] = tokens_to_target(curves[arm.name], speedup["target_loss"])
            row["ratio_to_baseline"] = _ratio(row["tokens_to_target"], speedup)
        rows.append(row)
    for setting in settings:
        members = [by_name[name] for name in setting["arms"]]
        setting["final_val_loss"] = spread([final_loss[arm.name] for arm in members])
        setting["domains"] = {
            d: {m: spread([arm.final[d][m] for arm in members if d in arm.final]) for m in ("loss", "bits_per_byte")}
            for d in domains if any(d in arm.final for arm in members)
        }
        if speedup:  # on the seed-mean curve, as for the baseline
            tokens = tokens_to_target(mean_curve([curves[arm.name] for arm in members]), speedup["target_loss"])
            setting.update(tokens_to_target=tokens, ratio_to_baseline=_ratio(tokens, speedup))
    return {"swept_keys": keys, "domains": domains, "val_loss_domains": shared, "spread": SPREAD,
            "arms": rows, "settings": settings, "tokens_to_target": speedup}


def _jsonable(value: object) -> object:
    """JSON without NaN or infinity (a diverged arm's loss becomes null) and with lists for tuples."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value if value is None or isinstance(value, bool | int | str) else str(value)


def build_comparison(arms: list[ArmRecord], out_dir: Path, title: str, baseline: str | None = None,
                     target_loss: float | None = None) -> Comparison:
    """Write comparison.md, comparison.json and the figures to ``out_dir``.

    ``baseline`` names the arm whose setting (averaged over its seeds) sets the target loss, unless
    ``target_loss`` is given, and the tokens every other arm's are divided by.
    """
    _check(arms, baseline)
    summary = _jsonable(summarize(arms, baseline, target_loss))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = _plots(arms, summary, out_dir, title)
    table = arms_table(summary)
    markdown = render_markdown(summary, table, plots, title)
    (out_dir / "comparison.md").write_text(markdown)
    (out_dir / "comparison.json").write_text(json.dumps(summary, indent=2, sort_keys=True, allow_nan=False) + "\n")
    return Comparison(markdown=markdown, table_markdown=table, plots=plots, summary=summary)


def _plots(arms: list[ArmRecord], summary: dict, out_dir: Path, title: str) -> list[str]:
    styles = compare_plots.arm_styles([setting["arms"] for setting in summary["settings"]])
    train = {arm.name: [(step * arm.tokens_per_step, row["loss"]) for step, row in sorted(arm.train_curve.items())
                        if "loss" in row] for arm in arms}
    val = {arm.name: validation_curve(arm, summary["val_loss_domains"]) for arm in arms}
    lr = {arm.name: [(step * arm.tokens_per_step, row["lr"]) for step, row in sorted(arm.train_curve.items())
                     if "lr" in row] for arm in arms}
    paths = [
        compare_plots.plot_overlaid(train, styles, out_dir / "train_loss.png", f"{title}: training loss",
                                    "tokens", "loss (nats/token)"),
        compare_plots.plot_overlaid(val, styles, out_dir / "val_loss.png", f"{title}: validation loss",
                                    "tokens", "loss (nats/token, token-weighted over domains)"),
        compare_plots.plot_overlaid(lr, styles, out_dir / "lr_schedule.png", f"{title}: learning rate",
                                    "tokens", "learning rate"),
        _plot_final(summary, out_dir / "final_by_setting.png", title),
    ]
    if summary["tokens_to_target"]:
        rows = summary["arms"]
        paths.append(compare_plots.plot_tokens_to_target(
            {row["name"]: row["tokens_to_target"] for row in rows},
            {row["name"]: row["ratio_to_baseline"] for row in rows}, styles,
            summary["tokens_to_target"].get("baseline_tokens"), out_dir / "tokens_to_target.png",
            f"{title}: tokens to loss {summary['tokens_to_target']['target_loss']:.4f}"))
    return [path.name for path in paths]


def _plot_final(summary: dict, path: Path, title: str) -> Path:
    settings, keys = summary["settings"], summary["swept_keys"]
    numeric = settings[0]["x"] is not None
    panels = {
        metric: {
            domain: [(s["x"] if numeric else i, cell["mean"], cell["std"] or 0.0)
                     for i, s in enumerate(settings)
                     if (cell := s["domains"].get(domain, {}).get(metric)) and cell["mean"] is not None]
            for domain in summary["domains"]
        }
        for metric in ("loss", "bits_per_byte")
    }
    xlabel = ", ".join(keys) if keys else "setting"
    return compare_plots.plot_final_by_setting(panels, path, f"{title}: final validation by setting", xlabel,
                                               None if numeric else [s["label"] for s in settings], SPREAD)


def _cell(value: object) -> str:
    return "" if value is None else _value(value).replace("|", "\\|")


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def _interval(bounds: list[float] | None) -> str:
    return "" if not bounds else f"{bounds[0]:.4f} to {bounds[1]:.4f}"


def _mean_std(cell: dict | None) -> str:
    if not cell or cell["mean"] is None:
        return ""
    return f"{cell['mean']:.4f}" + (f" ± {cell['std']:.4f}" if cell["std"] is not None else "")


def _tokens(tokens: float | None, ratio: float | None) -> str:
    if tokens is None:
        return "not reached"
    return f"{tokens:,.0f}" + (f" ({ratio:.2f}x)" if ratio is not None else "")


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def arms_table(summary: dict) -> str:
    """Every arm: its config differences, final validation loss, bits per byte per domain, tokens to target and
    its results; blank cells where an arm lacks a key or a domain."""
    rows, domains, speedup = summary["arms"], summary["domains"], summary["tokens_to_target"]
    params = sorted({key for row in rows for key in row["params"]})
    seed_column = not any(is_seed_key(key) for key in params)  # the seed, unless a params key already says it
    results = list(dict.fromkeys(key for row in rows for key in row["results"]))
    # The 95% bootstrap interval over held-out documents, where the arms' evals have one (evaluation.bootstrap).
    intervals = [d for d in domains if any(row["final"].get(d, {}).get("bits_per_byte_ci95") for row in rows)]
    header = ["arm", *params, *(["seed"] if seed_column else []), "final val loss",
              *(f"bpb {d}" for d in domains), *(f"bpb {d} 95% interval" for d in intervals),
              *(["tokens to target (x baseline)"] if speedup else []), *results]
    body = []
    for row in rows:
        cells = [_cell(row["name"]), *(_cell(row["params"].get(key)) for key in params)]
        cells += [_cell(row["seed"])] if seed_column else []
        cells += [_number(row["final_val_loss"])]
        cells += [_number(row["final"][d]["bits_per_byte"]) if d in row["final"] else "" for d in domains]
        cells += [_interval(row["final"].get(d, {}).get("bits_per_byte_ci95")) for d in intervals]
        cells += [_tokens(row["tokens_to_target"], row["ratio_to_baseline"])] if speedup else []
        body.append(cells + [_cell(row["results"].get(key)) for key in results])
    return _table(header, body)


def settings_table(summary: dict) -> str:
    """Per setting: its arms and the mean ± spread over them of the final losses; tokens on its seed-mean curve."""
    domains, speedup = summary["domains"], summary["tokens_to_target"]
    header = ["setting", "arms", "final val loss", *(f"{m} {d}" for d in domains for m in ("loss", "bpb")),
              *(["tokens to target (x baseline)"] if speedup else [])]
    body = []
    for s in summary["settings"]:
        cells = [_cell(s["label"]), _cell(", ".join(s["arms"])), _mean_std(s["final_val_loss"])]
        cells += [_mean_std(s["domains"].get(d, {}).get(m)) for d in domains for m in ("loss", "bits_per_byte")]
        body.append(cells + ([_tokens(s["tokens_to_target"], s["ratio_to_baseline"])] if speedup else []))
    return _table(header, body)


def _speedup_text(speedup: dict | None) -> str:
    if speedup is None:
        return "No baseline arm and no target loss given, so no tokens-to-target comparison."
    how = ("Tokens to target: linear interpolation between the two evaluations around the first crossing of the "
           "validation curve; \"not reached\": the curve never gets down to the target.")
    target = f"Target: validation loss {speedup['target_loss']:.4f}"
    if speedup["baseline"] is None:
        return f"{target} (given). No baseline arm given, so no ratios. {how}"
    source = "given" if speedup["target_from"] == "given" else (
        f"the final validation loss of the baseline setting `{speedup['baseline_setting']}`, averaged over its "
        f"arms ({', '.join(speedup['baseline_arms'])})")
    base = speedup["baseline_tokens"]
    if base is None:
        reached = "The baseline's seed-mean curve never reaches it, so no ratios."
    else:
        reached = f"The baseline's seed-mean curve reaches it at {base:,.0f} tokens; " + (
            "ratio = arm tokens / baseline tokens (below 1: sooner)." if base else "no ratios to zero tokens.")
    return (f"Baseline: `{speedup['baseline']}`. {target}, {source}. {reached} {how} "
            "A setting's tokens are those of its seed-mean curve.")


def render_markdown(summary: dict, table: str, plots: list[str], title: str) -> str:
    keys = summary["swept_keys"]
    swept = (f"Swept: {', '.join(f'`{key}`' for key in keys)} (seed keys excluded)." if keys
             else "No swept parameter: the arms differ at most in their seed.")
    intro = (f"{len(summary['arms'])} arm(s) in {len(summary['settings'])} setting(s). {swept} An arm's validation "
             f"loss: the token-weighted mean of its losses on {', '.join(summary['val_loss_domains'])} (the domains "
             "every arm evaluates); final: at its last evaluation. A bpb interval is the 95% bootstrap interval "
             "over the held-out documents of one arm's final evaluation (its data noise, not its seed spread).")
    parts = [f"# {title}", intro, "## Arms", table, f"## Settings\n\nMean ± {SPREAD} (no spread for one seed).",
             settings_table(summary), "## Tokens to target", _speedup_text(summary["tokens_to_target"]),
             "## Figures", *(f"![{Path(plot).stem}]({plot})" for plot in plots)]
    return "\n\n".join(parts) + "\n"
