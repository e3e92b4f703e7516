"""The comparison report of one experiment: its arms' outputs gathered from the lab home, compared, committed.

The report is an output like any other: ``<store>/report/<fingerprint>/``, its fingerprint made of the report
code, the arms (names, swept values, seeds) and the content hashes of their ``checkpoint`` and ``eval`` outputs,
so an unchanged experiment reuses its report and a re-trained arm gets a new one. The comparison itself is
``evaluation.compare``; this module only finds the arms' outputs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from evaluation.compare import ArmRecord, Comparison, build_comparison, load_arm
from orchestration.code_identity import combined_version, module_digests
from orchestration.experiments import Experiment
from orchestration.lab import Lab, lab_for
from orchestration.lineage import PlanItem
from orchestration.store import Manifest, Store, fingerprint

REPORT_MODULES = ("evaluation.compare", "evaluation.compare_plots", "orchestration.reports")


@dataclass
class ArmOutputs:
    name: str
    overrides: list[str]
    params: dict[str, str]
    items: dict[str, PlanItem]  # the arm's plan, by stage


def arm_outputs(experiment: Experiment) -> list[ArmOutputs]:
    return [ArmOutputs(arm.name, arm.overrides, arm.params, {i.stage: i for i in lab_for(arm.overrides).plan()})
            for arm in experiment.arms]


def missing_outputs(arms: list[ArmOutputs]) -> list[str]:
    """Arms whose checkpoint or eval is not materialized yet, as "arm: stage"."""
    return [f"{arm.name}: {stage}" for arm in arms for stage in ("checkpoint", "eval")
            if arm.items[stage].manifest is None]


def report_fingerprint(experiment: Experiment, arms: list[ArmOutputs]) -> str:
    identity = {"arms": [[a.name, a.params, a.overrides] for a in arms], "baseline": experiment.baseline_arm}
    upstream = {f"{a.name}/{stage}": a.items[stage].manifest.content_hash for a in arms
                for stage in ("checkpoint", "eval")}
    modules = REPORT_MODULES
    if experiment.preset:  # a preset's report holds its finding too, and reads its law fit
        from orchestration.law_fits import latest_law_fit
        from orchestration.preset_reports import FINDING_MODULES
        from orchestration.presets import preset_of

        modules += FINDING_MODULES
        identity["analysis"] = preset_of(experiment).analysis
        law = latest_law_fit(experiment, arms)  # the arms planned above, not planned again
        if law is not None:
            upstream["law_fit"] = law.content_hash
    code = combined_version(module_digests(modules))
    return fingerprint("report", code, identity, upstream)


def arm_record(arm: ArmOutputs, store: Store) -> ArmRecord:
    checkpoint, evaluation = arm.items["checkpoint"].manifest, arm.items["eval"].manifest
    filtered = arm.items["filtered"].manifest
    cfg = lab_for(arm.overrides).cfg
    results = {"final_train_loss": checkpoint.stats.get("final_loss"),
               "tokens_per_second": checkpoint.stats.get("tokens_per_second"),
               "kept_documents": filtered.stats.get("kept") if filtered else None}
    # Swept values as the command line typed them, read as YAML so that 0.1 is a number the plots can place.
    params = {key: yaml.safe_load(value) for key, value in arm.params.items()}
    return load_arm(arm.name, params, cfg.train.seed, cfg.train.global_batch_size * cfg.train.seq_len,
                    store.path("checkpoint", checkpoint.fingerprint), store.path("eval", evaluation.fingerprint),
                    {k: v for k, v in results.items() if v is not None})


def build_report(experiment: Experiment, arms: list[ArmOutputs], out_dir: Path, store: Store) -> Comparison:
    records = [arm_record(arm, store) for arm in arms]
    baseline = experiment.baseline_arm if len(arms) > 1 else None
    comparison = build_comparison(records, out_dir, title=experiment.name, baseline=baseline)
    if experiment.preset:
        from orchestration.preset_reports import write_finding

        finding = write_finding(experiment, records, out_dir)
        comparison.summary["verdicts"] = {e.name: e.verdict for e in finding.effects}
    return comparison


def latest_report(store: Store, experiment: Experiment) -> tuple[Manifest | None, list[str]]:
    """The report of the experiment's current outputs if it was materialized, and the outputs still missing."""
    arms = arm_outputs(experiment)
    missing = missing_outputs(arms)
    if missing:
        return None, missing
    return store.find("report", report_fingerprint(experiment, arms)), []


@dataclass
class Report:
    path: str  # relative to the lab home
    content_hash: str
    markdown: str
    plots: list[Path]
    val_loss: dict[str, float]  # final validation loss per arm
    mlflow_url: str


def materialize_report(experiment: Experiment, dagster_run_id: str, log: Callable[[str], None]) -> Report:
    """Build the report (or reuse it) under its lease, and record the arms' results in MLflow."""
    arms = arm_outputs(experiment)
    missing = missing_outputs(arms)
    if missing:
        raise RuntimeError(f"the report of {experiment.name} needs every arm's checkpoint and eval; missing: "
                           f"{', '.join(missing)}. Materialize the experiment (`lab materialize` or its job) first")
    lab = lab_for(experiment.arms[0].overrides)
    fp = report_fingerprint(experiment, arms)
    with lab.store.lease("report", fp, holder=f"dagster run {dagster_run_id}", on_wait=log):
        manifest = lab.store.find("report", fp)
        if manifest is None:
            run_id = lab.tracker.start_run(experiment.name, experiment.baseline_arm, "report", {"lab.kind": "report"},
                                           {"baseline": experiment.baseline_arm})

            def build(partial: Path) -> Manifest:
                comparison = build_report(experiment, arms, partial, lab.store)
                return Manifest("report", fp, "", "", {"experiment": experiment.name}, {}, comparison.summary,
                                mlflow_run_id=run_id, dagster_run_id=dagster_run_id)

            manifest = lab.store.commit("report", fp, build)
            log_to_mlflow(lab, experiment, manifest)
    output = lab.store.path("report", fp)
    val_loss = {arm["name"]: arm["final_val_loss"] for arm in manifest.stats["arms"]
                if arm["final_val_loss"] is not None}
    return Report(f"store/report/{fp}", manifest.content_hash, (output / "comparison.md").read_text(),
                  sorted(output.glob("*.png")), val_loss, lab.tracker.run_url(manifest.mlflow_run_id))


def log_to_mlflow(lab: Lab, experiment: Experiment, report: Manifest) -> None:
    """Each arm's swept values and results on its arm run (MLflow's compare view); the report's files on its run."""
    for arm, row in zip(experiment.arms, report.stats["arms"], strict=True):
        results = {"final_val_loss": row["final_val_loss"], **row["results"],
                   **{f"{domain}.bits_per_byte": r["bits_per_byte"] for domain, r in row["final"].items()},
                   **{f"{domain}.loss": r["loss"] for domain, r in row["final"].items()}}
        params = arm.params or {"overrides": " ".join(arm.overrides)}
        lab.tracker.log_arm(experiment.name, arm.name, params, {k: v for k, v in results.items() if v is not None})
    output = lab.store.path("report", report.fingerprint)
    lab.tracker.finish_run(report.mlflow_run_id, {}, {"lab.content_hash": report.content_hash},
                           sorted(output.iterdir()))
