"""The parts of live evaluation that need no training: the sensor's reading of reported checkpoints (cursor, run
keys) against a real Dagster instance, and the evaluation cache's names and keys."""

from __future__ import annotations

import json
from pathlib import Path

from dagster import AssetKey, AssetObservation, DagsterInstance, build_sensor_context

from orchestration.eval_cache import EvalCache, checkpoint_key
from orchestration.live_eval import checkpoint_requests, live_evaluation_sensor


def report(instance: DagsterInstance, key: list[str], step: int, fingerprint: str = "abc") -> None:
    instance.report_runless_asset_event(AssetObservation(asset_key=AssetKey(key), metadata={
        "checkpoint_step": step, "fingerprint": fingerprint, "mlflow_run_id": "run1", "experiment": key[0],
        "arm": key[0], "overrides": json.dumps([f"experiment={key[0]}"])}))


def test_each_reported_checkpoint_is_requested_once_in_order_and_the_cursor_moves_past_it(tmp_path: Path) -> None:
    with DagsterInstance.local_temp(str(tmp_path)) as instance:
        report(instance, ["a", "checkpoint"], 0)
        report(instance, ["b", "checkpoint"], 0, "def")
        report(instance, ["a", "checkpoint"], 10)
        instance.report_runless_asset_event(AssetObservation(asset_key=AssetKey(["a", "eval"]), metadata={"x": 1}))
        cursor: dict[str, int] = {}
        first = list(checkpoint_requests(instance, cursor))
        assert sorted(r.run_key for r in first) == ["abc@step-0", "abc@step-10", "def@step-0"]
        request = next(r for r in first if r.run_key == "abc@step-10")
        config = request.run_config["ops"]["evaluate_saved_checkpoint"]["config"]
        assert config["overrides"] == ["experiment=a"] and config["asset"] == ["a", "checkpoint"]
        assert request.tags["lab/checkpoint_step"] == "10"

        # Nothing new: nothing requested. A checkpoint reported after the cursor: only it.
        assert list(checkpoint_requests(instance, cursor)) == []
        report(instance, ["a", "checkpoint"], 20)
        assert [r.run_key for r in checkpoint_requests(instance, dict(cursor))] == ["abc@step-20"]
        # A tick whose cursor was never committed (a daemon crash) asks again under the same run keys, which
        # Dagster launches once; a resumed training reporting a checkpoint again does the same.
        report(instance, ["a", "checkpoint"], 10)
        again = [r.run_key for r in checkpoint_requests(instance, cursor)]
        assert again == ["abc@step-20", "abc@step-10"]


def test_a_checkpoint_is_named_by_its_training_output_and_step_committed_or_not(tmp_path: Path) -> None:
    committed = tmp_path / "checkpoint" / "f00d" / "checkpoint" / "step-40"
    partial = tmp_path / "checkpoint" / ".partial-f00d" / "checkpoint" / "step-40"
    assert checkpoint_key(committed, {}) == checkpoint_key(partial, {}) == "f00d/step-40"
    untrained = {"model": {"dim": 64}, "vocab_size": 512, "seed": 0}
    assert checkpoint_key(None, untrained) != checkpoint_key(None, {**untrained, "seed": 1})


def test_cache_entries_depend_on_their_inputs_and_survive_a_new_process(tmp_path: Path) -> None:
    cache = EvalCache(tmp_path, holder="test")
    inputs = {"split": "1234", "eval": {"seq_len": 64}}
    key = cache.key("f00d/step-40", "validation:python", inputs)
    assert cache.get(key) is None
    with cache.hold("f00d/step-40"):
        cache.put(key, {"loss": 4.2}, {"checkpoint": "f00d/step-40"})
    assert EvalCache(tmp_path, holder="other").get(key) == {"loss": 4.2}
    assert cache.key("f00d/step-40", "validation:python", {**inputs, "eval": {"seq_len": 32}}) != key
    assert cache.key("f00d/step-40", "validation:python", {**inputs, "split": "5678"}) != key
    assert cache.key("f00d/step-80", "validation:python", inputs) != key
    assert not list(cache.root.rglob(".*.json.*")), "a scratch file was left behind"


def test_a_sensor_switched_on_for_the_first_time_starts_after_the_history(tmp_path: Path) -> None:
    with DagsterInstance.local_temp(str(tmp_path)) as instance:
        report(instance, ["a", "checkpoint"], 0)  # a training that ended before the sensor was first on
        first = build_sensor_context(instance=instance, cursor=None)
        assert list(live_evaluation_sensor(first) or []) == []
        report(instance, ["a", "checkpoint"], 10)
        report(instance, ["c", "checkpoint"], 0, "new")  # a new experiment's training
        later = build_sensor_context(instance=instance, cursor=first.cursor)
        assert sorted(r.run_key for r in live_evaluation_sensor(later)) == ["abc@step-10", "new@step-0"]
