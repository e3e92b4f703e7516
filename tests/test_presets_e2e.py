"""Every research preset's tiny version, end to end on one lab home: `lab preset NAME --tiny` trains its arms
through Dagster (torchrun), materializes its law fit (law presets) and report, and `lab report --docs` writes its
page from the lab home alone. The presets share the tiny corpus, tokenizer and, where configs agree, arms.

The presets are split over two files (this one and test_law_presets_e2e.py), so that `make test`'s two workers
can run them side by side; each file has its own lab home."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestration.cli import main
from orchestration.experiments import find_experiment
from orchestration.law_fits import law_dir
from orchestration.preset_reports import write_docs
from orchestration.reports import latest_report
from tests.test_presets import PRESETS

LAW_PRESETS = ["lr_annealing_law", "mixture_law", "wsd_vs_cosine"]  # test_law_presets_e2e.py


@pytest.mark.e2e
@pytest.mark.parametrize("name", [name for name in PRESETS if name not in LAW_PRESETS])
def test_a_tiny_preset_runs_and_its_report_is_written_from_the_lab_home(preset_lab: Path, tmp_path: Path,
                                                                        name: str) -> None:
    check_tiny_preset(preset_lab, tmp_path, name)


def check_tiny_preset(lab: Path, tmp_path: Path, name: str) -> None:
    assert main(["preset", name, "--tiny"]) == 0
    experiment = find_experiment(lab, f"{name}_tiny")
    from orchestration.lab import lab_for

    report, missing = latest_report(lab_for(experiment.arms[0].overrides).store, experiment)
    assert report is not None and not missing
    folder = lab_for(experiment.arms[0].overrides).store.path("report", report.fingerprint)
    finding = json.loads((folder / "finding.json").read_text())
    page = write_docs(experiment, folder, law_dir(experiment), root=tmp_path)
    text = page.read_text()
    assert text.startswith("# ") and "**Published**" in text and "**Ran here**" in text
    for effect in finding["effects"]:  # every effect with its verdict, from the lab home's numbers
        assert effect["name"] in text and effect["verdict"] in text and effect["seeds"] >= 1
    figures = {path.name for path in page.with_suffix("").iterdir()}
    assert "val_loss.png" in figures and ("effects.png" in figures) == bool(finding["effects"])
    for link in [line.split("](", 1)[1].rstrip(")") for line in text.splitlines() if line.startswith("![")]:
        assert (page.parent / link).is_file(), f"{link} is linked from the page but missing"
    law = law_dir(experiment)
    if name in ("lr_annealing_law", "mixture_law"):
        summary = json.loads((law / "law.json").read_text())
        assert "## Law fit" in text and summary["errors"], "the held-out arm's prediction error is reported"
        assert set(summary["plots"]) <= figures
    else:
        assert law is None and finding["effects"]
