"""Forgetting tables and transfer matrices from hand-built eval curves (no training)."""

import json
from pathlib import Path

import pytest

from evaluation.forgetting import (
    Stage,
    ancestor_rows,
    as_curve,
    forgetting_markdown,
    forgetting_table,
    trained_domains,
    transfer_markdown,
    transfer_matrix,
    write_forgetting,
)
from evaluation.forgetting_plots import plot_forgetting, plot_transfer
from training.outputs import LEDGER_FILE


def curve_of(losses: dict[str, dict[int, float]]) -> dict[int, dict[str, dict[str, float]]]:
    """An eval.json-like curve from per-domain losses by step."""
    steps = sorted({step for by_step in losses.values() for step in by_step})
    return {step: {d: {"loss": by_step[step], "bits_per_byte": by_step[step] / 2, "tokens": 100}
                   for d, by_step in losses.items() if step in by_step} for step in steps}


# A continual-pretraining child on docs, from step 0 (the parent's checkpoint) with dense early checkpoints.
CHILD = curve_of({
    "python": {0: 2.0, 1: 2.5, 2: 2.8, 4: 2.3, 8: 1.9},  # rises to +0.8 at step 2, ends below the parent
    "code": {0: 3.0, 1: 3.1, 2: 3.05, 4: 3.2, 8: 3.15},  # peaks at step 4 (+0.2), keeps +0.15: forgotten
    "data": {0: 1.0, 1: 0.9, 2: 0.8, 4: 0.7, 8: 0.6},  # never rises
    "docs": {0: 4.0, 1: 3.8, 2: 3.5, 4: 3.2, 8: 3.0},  # the child's new domain, not the parent's
})


def test_rise_and_recovery_per_parent_domain() -> None:
    table = forgetting_table(CHILD, 0, ["python", "code", "data", "license"])
    assert table.steps == [1, 2, 4, 8]
    assert list(table.domains) == ["code", "data", "python"]  # docs is not a parent domain
    assert table.without_heldout == ["license"]  # named, not silently dropped

    python = table.domains["python"]
    assert python.start_loss == 2.0 and python.loss_by_step == {1: 2.5, 2: 2.8, 4: 2.3, 8: 1.9}
    assert python.max_rise == pytest.approx(0.8) and python.max_rise_step == 2
    assert python.final_change == pytest.approx(-0.1)
    assert python.recovered is True and python.recovered_fraction == pytest.approx(0.9 / 0.8)

    code = table.domains["code"]
    assert code.max_rise == pytest.approx(0.2) and code.max_rise_step == 4
    assert code.final_change == pytest.approx(0.15)
    assert code.recovered is False and code.recovered_fraction == pytest.approx(0.25)

    data = table.domains["data"]
    assert data.max_rise == pytest.approx(-0.1) and data.max_rise_step == 1
    assert data.recovered is None and data.recovered_fraction is None


def test_table_from_eval_json_of_a_branch() -> None:
    # eval.json's steps come back as strings; a branch's curve starts at the parent's step.
    curve = json.loads(json.dumps(curve_of({"python": {200: 1.5, 220: 1.6, 240: 1.4}})))
    table = forgetting_table(curve, 200, ["python"])
    assert table.start_step == 200 and table.steps == [220, 240]
    assert table.domains["python"].max_rise_step == 220 and table.domains["python"].recovered is True
    with pytest.raises(ValueError, match="no point at the start step 0"):
        forgetting_table(curve, 0, ["python"])


def test_markdown_names_peak_and_recovery() -> None:
    markdown = forgetting_markdown(forgetting_table(CHILD, 0, ["python", "code", "data", "license"]))
    assert "| python | 2.000 | +0.800 (2) | 1.900 | -0.100 | yes |" in markdown
    assert "| code | 3.000 | +0.200 (4) | 3.150 | +0.150 | no (25% of the peak) |" in markdown
    assert "| data | 1.000 | -0.100 (1) | 0.600 | -0.400 | never rose |" in markdown
    assert "| 0 (parent) | 3.000 | 1.000 | 2.000 |" in markdown and "| 8 | 3.150 | 0.600 | 1.900 |" in markdown
    assert "no held-out data): license" in markdown


def test_transfer_matrix_over_a_chain() -> None:
    pretrain = curve_of({"python": {0: 6.0, 300: 2.0}, "docs": {0: 6.5, 300: 4.0}})
    stages = [
        Stage("demo", pretrain, 0, ["python"]),
        Stage("cpt_docs", CHILD, 0, ["docs", "python"]),  # replay keeps python in training
    ]
    rows = transfer_matrix(stages)
    assert [row.stage for row in rows] == ["demo", "cpt_docs"]
    assert rows[0].change == pytest.approx({"docs": -2.5, "python": -4.0})
    assert rows[1].change == pytest.approx({"code": 0.15, "data": -0.4, "docs": -1.0, "python": -0.1})
    markdown = transfer_markdown(rows)
    assert markdown.splitlines()[0] == "| stage | code | data | docs | python |"
    assert "| demo | – | – | -2.500 | **-4.000** |" in markdown
    assert "| cpt_docs | +0.150 | -0.400 | **-1.000** | **-0.100** |" in markdown
    # A parent that a child branched from mid-run: its row ends at the branch step.
    [branched] = transfer_matrix([Stage("demo", CHILD, 0, ["python"], end_step=2)])
    assert branched.change == pytest.approx({"code": 0.05, "data": -0.2, "docs": -0.5, "python": 0.8})
    with pytest.raises(ValueError, match="no point at step 3"):
        transfer_matrix([Stage("demo", CHILD, 0, ["python"], end_step=3)])


def test_trained_domains_from_the_checkpoint_ledger(tmp_path: Path) -> None:
    ledger = {
        "20": {"phases": {"stable": {"python": 500, "docs": 0}}, "replay": {"code": 40}, "tokens": 540},
        "40": {"phases": {"stable": {"python": 900, "docs": 0}, "cooldown": {"docs": 100}}, "replay": {},
               "tokens": 1000},
    }
    (tmp_path / LEDGER_FILE).write_text(json.dumps(ledger))
    assert trained_domains(tmp_path, 20) == ["code", "python"]
    assert trained_domains(tmp_path, 40) == ["docs", "python"]
    with pytest.raises(ValueError, match="has no step 30"):
        trained_domains(tmp_path, 30)


def test_plots_are_written_and_reproducible(tmp_path: Path) -> None:
    table = forgetting_table(CHILD, 0, ["python", "code", "data"])
    rows = transfer_matrix([Stage("cpt_docs", as_curve(CHILD), 0, ["docs"])])
    first = plot_forgetting(table, tmp_path / "a.png", "child").read_bytes()
    assert first[:4] == b"\x89PNG" and plot_forgetting(table, tmp_path / "b.png", "child").read_bytes() == first
    heatmap = plot_transfer(rows, tmp_path / "t.png", "transfer").read_bytes()
    assert heatmap == plot_transfer(rows, tmp_path / "u.png", "transfer").read_bytes()


def test_a_chain_of_three_accumulates_rows_down_the_lineage(tmp_path: Path) -> None:
    """demo -> cpt_docs -> a grandchild: each child's forgetting.json holds its chain's rows, then its own."""
    pretrain = curve_of({"python": {0: 6.0, 150: 3.0, 300: 2.0}, "docs": {0: 6.5, 300: 4.0}})
    # cpt_docs started from demo's step 300 (its row ends there).
    first = ancestor_rows(Stage("demo", pretrain, 0, ["python"], end_step=300), None)
    _, rows = write_forgetting(tmp_path, "cpt_docs", CHILD, 0, ["python"], ["docs", "python"], first)
    saved = json.loads((tmp_path / "forgetting.json").read_text())
    assert [row["stage"] for row in saved["transfer"]] == ["demo", "cpt_docs"]
    # The grandchild starts from cpt_docs' step 4: cpt_docs' saved row is replaced by one that ends there.
    chain = ancestor_rows(Stage("cpt_docs", CHILD, 0, ["docs", "python"], end_step=4), saved)
    assert [row.stage for row in chain] == ["demo", "cpt_docs"]
    assert chain[0] == rows[0]
    assert chain[1].change == pytest.approx({"code": 0.2, "data": -0.3, "docs": -0.8, "python": 0.3})
