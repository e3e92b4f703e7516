"""Experiments and their arms: naming a sweep, recording it, and the asset graph over every known arm (no training)."""

from __future__ import annotations

from pathlib import Path

import pytest
from dagster import AssetKey

from orchestration.cli import as_experiment
from orchestration.config import ConfigError
from orchestration.definitions import build_definitions
from orchestration.experiments import Arm, Experiment, conf_experiments, known_experiments, record, slug
from orchestration.graph import build_graph
from orchestration.lineage import STAGE_BY_NAME, _why_new, nearest_output
from orchestration.store import Manifest, Store, fingerprint

SWEEP = ["experiment=tiny", "mixture.weights.docs=0.1,0.5", "train.seed=0,1"]


@pytest.fixture(autouse=True)
def lab_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LAB_HOME", str(tmp_path))
    return tmp_path


def test_a_sweep_is_one_experiment_whose_arms_are_named_by_what_varies() -> None:
    sweep = as_experiment(SWEEP, multirun=True, name="", baseline="")
    assert [arm.name for arm in sweep.arms] == ["docs=0.1 seed=0", "docs=0.1 seed=1", "docs=0.5 seed=0",
                                                "docs=0.5 seed=1"]
    assert sweep.axes == {"mixture.weights.docs": ["0.1", "0.5"], "train.seed": ["0", "1"]}
    assert sweep.arms[3].overrides == ["experiment=tiny", "mixture.weights.docs=0.5", "train.seed=1"]
    assert sweep.baseline_arm == "docs=0.1 seed=0"
    # The same command names the same experiment; another command another one.
    assert as_experiment(SWEEP, True, "", "").name == sweep.name
    assert as_experiment([*SWEEP, "eval.seq_len=32"], True, "", "").name != sweep.name


def test_known_configs_are_recognised_and_wrong_input_is_refused_before_anything_runs() -> None:
    assert as_experiment(["experiment=tiny"], False, "", "").source == "conf"
    assert as_experiment([], False, "", "").name == "demo"  # the defaults compose the demo
    with pytest.raises(ConfigError, match="--baseline 'docs=9' is not an arm"):
        as_experiment(SWEEP, True, "", "docs=9")
    with pytest.raises(ConfigError, match="Valid keys"):
        as_experiment(["experiment=tiny", "train.stepz=3"], False, "", "")


def test_recorded_experiments_are_known_after_the_conf_ones(lab_home: Path) -> None:
    sweep = as_experiment(SWEEP, True, "my_sweep", "docs=0.5 seed=0")
    record(lab_home, sweep)
    names = [e.name for e in known_experiments(lab_home)]
    assert names[: len(conf_experiments())] == [e.name for e in conf_experiments()]
    assert names[-1] == "my_sweep"
    again = known_experiments(lab_home)[-1]
    assert again == sweep and again.baseline_arm == "docs=0.5 seed=0"
    assert not list((lab_home / "experiments").glob(".*tmp"))  # written atomically: no partial file left


def test_arms_share_what_their_configs_share_and_children_hang_off_their_parent() -> None:
    sweep = as_experiment(SWEEP, True, "sweep", "")
    graph = build_graph([*conf_experiments(), sweep])
    arms = graph.experiment_arms("sweep")
    paths = {arm.arm.name: arm.paths for arm in arms}
    # Curation is tiny's: the sweep changes nothing before the mixture.
    for stage in ("corpus", "filtered", "tokenizer"):
        assert {tuple(p[stage]) for p in paths.values()} == {("tiny", stage)}
    # The mixture depends on the docs weight only: seeds share it; 0.1 and 0.5 each have one.
    assert paths["docs=0.1 seed=0"]["mixed"] == paths["docs=0.1 seed=1"]["mixed"] == ["sweep", "docs_0_1_seed_0",
                                                                                       "mixed"]
    assert paths["docs=0.5 seed=0"]["mixed"] != paths["docs=0.1 seed=0"]["mixed"]
    # Training differs in every arm.
    assert len({tuple(p["checkpoint"]) for p in paths.values()}) == 4
    # Continual pretraining and the WSD branch start from the demo's checkpoint asset: an edge in the graph.
    nodes = {tuple(node.path): node for node in graph.nodes.values()}
    for child in ("cpt_docs", "wsd_branch"):
        assert ["demo", "checkpoint"] in nodes[(child, "checkpoint")].deps
        assert ["demo", "checkpoint"] in nodes[(child, "eval")].deps
    assert nodes[("demo", "corpus")].arms == ["demo/demo", "cpt_docs/cpt_docs", "wsd_branch/wsd_branch"]


def test_definitions_hold_every_arm_a_report_and_a_job_per_experiment() -> None:
    sweep = as_experiment(SWEEP, True, "sweep", "")
    graph = build_graph([*conf_experiments(), sweep])
    defs = build_definitions(graph)
    keys = {key for assets in defs.assets for key in assets.keys}
    assert AssetKey(["sweep", "report"]) in keys
    assert {AssetKey([*arm.paths["eval"]]) for arm in graph.experiment_arms("sweep")} <= keys
    job = defs.resolve_job_def("experiment_sweep")
    assert job.tags["lab/experiment"] == "sweep"
    assert slug("docs=0.1 seed=0") == "docs_0_1_seed_0"


def test_an_unrecorded_parent_becomes_an_experiment_of_its_own() -> None:
    parent = ["experiment=tiny", "train.seed=7"]
    child = Experiment("child", [Arm("child", ["experiment=tiny", f'parent.experiment={parent!r}'.replace("'", '"'),
                                              "train.steps=100"])])
    graph = build_graph([child])
    parents = [e for e in graph.experiments if e.name != "child"]
    assert len(parents) == 1 and parents[0].arms[0].overrides == parent
    checkpoint = graph.experiment_arms("child")[0].paths["checkpoint"]
    node = next(n for n in graph.nodes.values() if n.path == checkpoint)
    assert graph.experiment_arms(parents[0].name)[0].paths["checkpoint"] in node.deps


def test_a_plan_explains_and_prices_a_miss_by_the_nearest_earlier_output(tmp_path: Path) -> None:
    """Not by whatever ran last: after a tiny run, the demo's retraining is priced by the demo's own last build."""
    store = Store(tmp_path / "store")
    demo = {"model": {"dim": 128}, "train": {"steps": 300, "lr": 0.003}}
    tiny = {"model": {"dim": 32}, "train": {"steps": 80, "lr": 0.003}}
    for config, seconds in ((demo, 180.0), (tiny, 14.0)):  # tiny ran last
        fp = fingerprint("checkpoint", "code", config, {})
        store.commit("checkpoint", fp, lambda folder, c=config, s=seconds, f=fp: Manifest(
            "checkpoint", f, "", "code", c, {}, {}, build_seconds=s))
    changed = {"model": {"dim": 128}, "train": {"steps": 300, "lr": 0.001}}
    nearest = nearest_output(store, "checkpoint", changed)
    assert nearest.config == demo
    assert "config train.lr: 0.003 -> 0.001" == _why_new(STAGE_BY_NAME["checkpoint"], changed, "code", nearest, {})
