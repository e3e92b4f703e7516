"""Research presets: the files, their arms and seeds, and the verdicts of their findings (no training here)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from evaluation.compare import ArmRecord
from evaluation.findings import ArmInfo, Effect, analyze
from orchestration.config import ConfigError, load_experiment
from orchestration.presets import arm_waves, load_preset, preset_experiment, preset_names


@pytest.fixture(autouse=True)
def own_lab_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAB_HOME", str(tmp_path / "lab"))  # the composed-config cache lives in the lab home


PRESETS = ["continual_pretraining", "dedup_rehydration", "domain_upsampling", "lr_annealing_law", "mixture_law",
           "source_conditioning", "wsd_vs_cosine"]


def test_the_seven_presets_are_there_and_their_arms_compose_full_and_tiny() -> None:
    assert preset_names() == PRESETS
    for name in PRESETS:
        preset = load_preset(name)
        assert len(preset.seeds) >= 2, f"{name}: every effect needs at least two seeds"
        for variant in (preset, preset.variant(tiny=True)):
            experiment = preset_experiment(variant, [])
            assert len(experiment.arms) == len(variant.arms) * len(variant.seeds)
            for arm in experiment.arms:  # a wrong override (or a domain the tiny corpus lacks) fails here
                cfg = load_experiment(arm.overrides)
                assert cfg.train.seed == int(arm.params["train.seed"])


def test_a_branch_arm_starts_from_its_parent_arm_of_the_same_seed_in_a_later_wave() -> None:
    experiment = preset_experiment(load_preset("wsd_vs_cosine"), [])
    by_name = {arm.name: arm for arm in experiment.arms}
    child = load_experiment(by_name["wsd_100 seed=1"].overrides)
    assert list(child.parent.experiment) == by_name["wsd_200 seed=1"].overrides
    assert (child.parent.step, child.parent.mode) == (80, "branch")
    waves = [[arm.name for arm in wave] for wave in arm_waves(experiment)]
    assert len(waves) == 2 and "wsd_200 seed=0" in waves[0] and "wsd_100 seed=0" in waves[1]
    assert experiment.baseline == "cosine_200 seed=0" and experiment.preset == "wsd_vs_cosine"


def test_extra_overrides_apply_to_every_arm_and_name_the_experiment_apart() -> None:
    experiment = preset_experiment(load_preset("source_conditioning"), ["model.dim=96"])
    assert experiment.name.startswith("source_conditioning_") and experiment.name != "source_conditioning"
    assert all(load_experiment(arm.overrides).model.dim == 96 for arm in experiment.arms)


@pytest.mark.parametrize("change, message", [
    ("baseline: nobody", "baseline 'nobody' is not an arm"),
    ("colour: red", "unknown keys ['colour']"),
])
def test_a_bad_preset_fails_with_a_message_that_names_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            change: str, message: str) -> None:
    import orchestration.presets as presets

    text = (presets.PRESET_DIR / "source_conditioning.yaml").read_text()
    key = change.split(":")[0]
    lines = [line for line in text.splitlines() if not line.startswith(f"{key}:")]
    (tmp_path / "broken.yaml").write_text("\n".join([*lines, change]) + "\n")
    monkeypatch.setattr(presets, "PRESET_DIR", tmp_path)
    with pytest.raises(ConfigError, match=re.escape(message)):
        presets.load_preset("broken")
    with pytest.raises(ConfigError, match="no preset named 'absent'"):
        presets.load_preset("absent")


def record(name: str, seed: int, losses: dict[str, float]) -> ArmRecord:
    final = {domain: {"loss": loss, "bits_per_byte": loss, "tokens": 100} for domain, loss in losses.items()}
    return ArmRecord(name, {}, seed, 10, {}, {0: final, 10: final}, final, {})


def test_verdicts_weigh_the_effect_against_the_seed_spread() -> None:
    clear = Effect("clear", "m", "a", "b", "lower", {0: 1.0, 1: 1.02}, {0: 1.2, 1: 1.21})
    noisy = Effect("noisy", "m", "a", "b", "lower", {0: 1.0, 1: 1.15}, {0: 1.1, 1: 1.1})
    reversed_ = Effect("reversed", "m", "a", "b", "lower", {0: 1.3, 1: 1.31}, {0: 1.0, 1: 1.0})
    close = Effect("close", "m", "a", "b", "close", {0: 1.0, 1: 1.0}, {0: 1.01, 1: 1.01}, tolerance=0.02)
    assert clear.verdict == "held" and clear.mean == pytest.approx(-0.195)
    assert noisy.verdict == "within spread"
    assert reversed_.verdict.startswith("not held (reversed")
    assert close.verdict == "held"
    assert Effect("one seed", "m", "a", "b", "higher", {0: 2.0}, {0: 1.0}).verdict == "within spread"
    assert Effect("same data", "m", "a", "b", "lower", {0: 2.0, 1: 2.1}, {0: 2.0, 1: 2.1}).verdict == "no difference"


def test_an_analysis_reads_domains_compute_and_tokens_to_match() -> None:
    arms = {"up": {s: record("up", s, {"python": 1.0 - 0.01 * s, "docs": 2.0}) for s in (0, 1)},
            "static": {s: record("static", s, {"python": 1.2, "docs": 1.9 + 0.01 * s}) for s in (0, 1)}}
    spec = {"effects": [{"arm": "up", "against": "static", "domains": ["python"]},
                        {"arm": "up", "against": "static", "domains": {"except": ["python"]}, "expected": "higher"}],
            "compute": {"branched": ["up"], "separate": ["static"]},
            "tokens_to_match": [{"arm": "up", "against": "static"}]}
    finding = analyze(spec, arms, {"up": ArmInfo(40), "static": ArmInfo(100)})
    assert [e.verdict for e in finding.effects] == ["held", "held"]
    assert finding.numbers["compute"]["branched"]["saved_vs_most"] == pytest.approx(0.6)
    assert finding.numbers["tokens_to_match"][0]["ratio"] is not None
