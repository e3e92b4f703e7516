"""The comparison report on synthetic arms whose curves are known exactly: L(t) = floor + amplitude * exp(-t / tau)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

from evaluation import compare, compare_plots
from evaluation.compare import ArmRecord, build_comparison, load_arm

TOKENS_PER_STEP = 1000
TAU = 150_000.0  # tokens; shared by every domain, so the token-weighted mean is again an exponential
EVAL_STEPS = range(0, 1001, 25)
DOMAIN_TOKENS = {"web": 1000, "docs": 3000}


def floor(docs: float, seed: int, domain: str) -> float:
    """The loss an arm decays to: lower with more docs, a different small offset per seed."""
    return {"web": 3.0, "docs": 2.5}[domain] - docs + 0.03 * seed**2


def loss_at(tokens: float, docs: float, seed: int, domain: str) -> float:
    return floor(docs, seed, domain) + 4.0 * math.exp(-tokens / TAU)


def make_arm(docs: float, seed: int, domains: tuple[str, ...] = ("web", "docs"), **params: object) -> ArmRecord:
    def results_at(step: int) -> dict[str, dict]:
        return {d: {"loss": loss_at(step * TOKENS_PER_STEP, docs, seed, d), "tokens": DOMAIN_TOKENS[d],
                    "bits_per_byte": loss_at(step * TOKENS_PER_STEP, docs, seed, d) / math.log(2) / 4}
                for d in domains}

    val_curve = {step: results_at(step) for step in EVAL_STEPS}
    train_curve = {step: {"step": step, "loss": loss_at(step * TOKENS_PER_STEP, docs, seed, "web") + 0.1,
                          "lr": 1e-3 * (1 - step / 1000)} for step in range(1, 1001, 10)}
    return ArmRecord(
        name=f"docs={docs} seed={seed}", params={"mixture.weights.docs": docs, "train.seed": seed, **params},
        seed=seed, tokens_per_step=TOKENS_PER_STEP, train_curve=train_curve, val_curve=val_curve,
        final=val_curve[max(EVAL_STEPS)], results={"tokens_per_second": 1234.5 + seed},
    )


def sweep() -> list[ArmRecord]:
    return [make_arm(docs, seed) for docs in (0.1, 0.3, 0.5) for seed in (0, 1, 2)]


def parse_table(markdown: str) -> list[dict[str, str]]:
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    return [dict(zip(header, (cell.strip() for cell in line.strip("|").split("|")), strict=True))
            for line in lines[2:]]


def weighted_floor(docs: float, seed: int) -> float:
    return sum(floor(docs, seed, d) * n for d, n in DOMAIN_TOKENS.items()) / sum(DOMAIN_TOKENS.values())


def test_table_names_every_arm_with_its_differences_and_results(tmp_path: Path) -> None:
    arms = sweep()
    comparison = build_comparison(arms, tmp_path, "docs sweep", baseline="docs=0.1 seed=0")
    rows = {row["arm"]: row for row in parse_table(comparison.table_markdown)}
    assert list(rows) == [arm.name for arm in arms]
    for arm in arms:
        row = rows[arm.name]
        assert row["mixture.weights.docs"] == str(arm.params["mixture.weights.docs"])
        assert row["train.seed"] == str(arm.seed)
        assert row["tokens_per_second"] == f"{arm.results['tokens_per_second']:g}"
        assert float(row["final val loss"]) == pytest.approx(
            weighted_floor(arm.params["mixture.weights.docs"], arm.seed) + 4.0 * math.exp(-1e6 / TAU), abs=1e-4)
        assert float(row["bpb docs"]) == pytest.approx(arm.final["docs"]["bits_per_byte"], abs=1e-4)
    assert comparison.summary["swept_keys"] == ["mixture.weights.docs"]  # the seed is not a swept parameter
    assert comparison.table_markdown in (tmp_path / "comparison.md").read_text()
    assert json.loads((tmp_path / "comparison.json").read_text()) == comparison.summary


def test_error_bars_are_the_seed_spread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    drawn = {}
    real_plot = compare_plots.plot_final_by_setting

    def record(panels: dict, *args: object) -> Path:
        drawn.update(panels)
        return real_plot(panels, *args)

    monkeypatch.setattr(compare_plots, "plot_final_by_setting", record)
    comparison = build_comparison(sweep()[::-1], tmp_path, "docs sweep")
    for metric in ("loss", "bits_per_byte"):
        for domain in DOMAIN_TOKENS:
            expected = []
            for docs in (0.1, 0.3, 0.5):  # the numeric swept parameter is the x axis, in its order
                finals = [make_arm(docs, seed).final[domain][metric] for seed in (0, 1, 2)]
                expected.append((docs, np.mean(finals), np.std(finals, ddof=1)))
            assert np.allclose(drawn[metric][domain], expected, rtol=1e-12)
    assert "standard deviation" in comparison.summary["spread"]


def test_tokens_to_target_matches_the_analytic_crossing(tmp_path: Path) -> None:
    target = 2.6
    comparison = build_comparison(sweep(), tmp_path, "docs sweep", baseline="docs=0.1 seed=0", target_loss=target)
    arms = {row["name"]: row for row in comparison.summary["arms"]}
    eval_interval = 25 * TOKENS_PER_STEP
    for docs, seed in [(0.1, 0), (0.3, 1), (0.5, 0)]:
        crossing = -TAU * math.log((target - weighted_floor(docs, seed)) / 4.0)
        found = arms[f"docs={docs} seed={seed}"]["tokens_to_target"]
        # A chord of a convex decreasing curve lies above it, so interpolation can only cross later.
        assert crossing <= found < crossing + 0.02 * eval_interval
    baseline_crossing = -TAU * math.log((target - np.mean([weighted_floor(0.1, s) for s in (0, 1, 2)])) / 4.0)
    assert comparison.summary["tokens_to_target"]["baseline_tokens"] == pytest.approx(baseline_crossing, rel=1e-3)
    assert arms["docs=0.3 seed=1"]["ratio_to_baseline"] == pytest.approx(
        arms["docs=0.3 seed=1"]["tokens_to_target"] / comparison.summary["tokens_to_target"]["baseline_tokens"])


def test_arms_that_never_reach_the_baseline_say_so(tmp_path: Path) -> None:
    arms = sweep()
    comparison = build_comparison(arms, tmp_path, "docs sweep", baseline="docs=0.3 seed=2")
    final_loss = {arm.name: weighted_floor(arm.params["mixture.weights.docs"], arm.seed) + 4.0 * math.exp(-1e6 / TAU)
                  for arm in arms}
    target = np.mean([final_loss[f"docs=0.3 seed={seed}"] for seed in (0, 1, 2)])
    assert comparison.summary["tokens_to_target"]["target_loss"] == pytest.approx(target)
    rows = {row["arm"]: row for row in parse_table(comparison.table_markdown)}
    # less docs, and the baseline's own worst seed, end above the target
    assert [name for name, row in rows.items() if row["tokens to target (x baseline)"] == "not reached"] == [
        name for name in final_loss if final_loss[name] > target] == [
        "docs=0.1 seed=0", "docs=0.1 seed=1", "docs=0.1 seed=2", "docs=0.3 seed=2"]
    reached = [row for row in comparison.summary["arms"] if row["tokens_to_target"] is not None]
    assert all(row["ratio_to_baseline"] < 1 for row in reached if row["name"].startswith("docs=0.5"))
    assert "tokens_to_target.png" in comparison.plots


def test_two_builds_are_byte_identical_and_plots_are_pngs(tmp_path: Path) -> None:
    first = build_comparison(sweep(), tmp_path / "a", "docs sweep", baseline="docs=0.1 seed=0")
    build_comparison(sweep(), tmp_path / "b", "docs sweep", baseline="docs=0.1 seed=0")
    files = sorted(path.name for path in (tmp_path / "a").iterdir())
    assert files == sorted(path.name for path in (tmp_path / "b").iterdir())
    assert set(first.plots) | {"comparison.md", "comparison.json"} == set(files)
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    for plot in first.plots:
        image = matplotlib.image.imread(tmp_path / "a" / plot)
        assert image.ndim == 3 and image.shape[0] > 100
        assert image.std() > 0  # something was drawn


def test_one_arm_without_seed_axis_or_baseline(tmp_path: Path) -> None:
    arm = make_arm(0.3, 0)
    arm.params = {}
    comparison = build_comparison([arm], tmp_path, "single")
    assert "No swept parameter" in comparison.markdown
    assert "no tokens-to-target comparison" in comparison.markdown
    assert comparison.summary["tokens_to_target"] is None
    assert "tokens_to_target.png" not in comparison.plots
    assert comparison.summary["settings"][0]["final_val_loss"]["std"] is None  # one seed: no spread, not zero
    assert parse_table(comparison.table_markdown)[0]["seed"] == "0"


def test_a_domain_only_some_arms_evaluate_leaves_blank_cells(tmp_path: Path) -> None:
    arms = [make_arm(0.1, 0), make_arm(0.3, 0, domains=("web",))]
    comparison = build_comparison(arms, tmp_path, "missing domain", baseline="docs=0.1 seed=0")
    rows = parse_table(comparison.table_markdown)
    assert rows[0]["bpb docs"] != "" and rows[1]["bpb docs"] == ""
    # compared on the shared domain only, so the second arm (more docs) is the lower one
    assert comparison.summary["val_loss_domains"] == ["web"]
    assert float(rows[1]["final val loss"]) < float(rows[0]["final val loss"])


def test_bootstrap_intervals_get_their_own_column(tmp_path: Path) -> None:
    arms = [make_arm(0.1, 0), make_arm(0.3, 0)]
    arms[0].final["docs"]["bits_per_byte_ci95"] = (1.25, 1.5)  # as eval.json holds it (a list once read back)
    rows = parse_table(build_comparison(arms, tmp_path, "intervals").table_markdown)
    assert rows[0]["bpb docs 95% interval"] == "1.2500 to 1.5000" and rows[1]["bpb docs 95% interval"] == ""
    assert "bpb web 95% interval" not in rows[0]  # no arm has one for web


def test_several_swept_keys_are_categorical_settings(tmp_path: Path) -> None:
    arms = [make_arm(0.1, 0, **{"train.lr": 1e-3}), make_arm(0.1, 1, **{"train.lr": 3e-4}),
            make_arm(0.3, 0, **{"train.lr": 1e-3})]
    summary = build_comparison(arms, tmp_path, "two keys").summary
    assert [s["label"] for s in summary["settings"]] == [
        "mixture.weights.docs=0.1, train.lr=0.001", "mixture.weights.docs=0.1, train.lr=0.0003",
        "mixture.weights.docs=0.3, train.lr=0.001"]
    assert all(s["x"] is None for s in summary["settings"])


def test_a_baseline_that_is_not_an_arm_names_the_arms(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"'nope' is not an arm.*docs=0\.1 seed=0"):
        build_comparison(sweep(), tmp_path, "docs sweep", baseline="nope")


def test_tokens_to_target_interpolates_and_never_extrapolates() -> None:
    curve = [(0, 5.0), (100, 3.0), (200, 2.0)]
    assert compare.tokens_to_target(curve, 2.5) == pytest.approx(150.0)
    assert compare.tokens_to_target(curve, 6.0) == 0.0
    assert compare.tokens_to_target(curve, 1.9) is None
    assert compare.tokens_to_target([(0, float("nan")), (100, 2.0)], 2.5) == 100.0


def test_load_arm_reads_the_checkpoint_and_eval_outputs(tmp_path: Path) -> None:
    synthetic = make_arm(0.3, 1)
    (tmp_path / "checkpoint").mkdir()
    (tmp_path / "eval").mkdir()
    rows = list(synthetic.train_curve.values())
    (tmp_path / "checkpoint" / "train_steps.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (tmp_path / "eval" / "eval.json").write_text(json.dumps(
        {"final": synthetic.final, "by_step": {str(step): r for step, r in synthetic.val_curve.items()}}))
    arm = load_arm(synthetic.name, synthetic.params, 1, TOKENS_PER_STEP, tmp_path / "checkpoint",
                   tmp_path / "eval", synthetic.results)
    assert arm == synthetic
