"""The eval assets' automation condition, evaluated as the daemon's sensor would, on materializations reported to an
ephemeral instance: eval follows a new checkpoint, and nothing else starts it."""

from __future__ import annotations

from pathlib import Path

import pytest
from dagster import AssetKey, AssetMaterialization, DagsterInstance, evaluate_automation_conditions

from orchestration.definitions import build_definitions
from orchestration.experiments import conf_experiments
from orchestration.graph import build_graph


def test_eval_follows_a_new_checkpoint_and_nothing_else(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAB_HOME", str(tmp_path))  # the config cache goes there
    graph = build_graph(conf_experiments())
    definitions = build_definitions(graph)
    paths = graph.arm("tiny", "tiny").paths
    evals = {AssetKey(node.path) for node in graph.nodes.values() if node.stage == "eval"}
    instance = DagsterInstance.ephemeral()

    def materialize(*stages: str) -> None:
        for stage in stages:
            instance.report_runless_asset_event(AssetMaterialization(AssetKey(paths[stage])))

    def requested(cursor=None):
        result = evaluate_automation_conditions(definitions, instance, cursor=cursor)
        return {key for key in evals if result.get_num_requested(key)}, result.cursor

    materialize("corpus", "filtered", "tokenizer", "mixed", "checkpoint")
    # Switched on with tiny's eval missing and the other experiments never materialized: nothing starts.
    found, cursor = requested()
    assert found == set()
    materialize("mixed")  # a new stream alone: its checkpoint must be trained first
    found, cursor = requested(cursor)
    assert found == set()
    materialize("checkpoint")
    found, cursor = requested(cursor)
    assert found == {AssetKey(paths["eval"])}
    materialize("eval")
    found, cursor = requested(cursor)
    assert found == set()
