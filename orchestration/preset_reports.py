"""A preset's finding inside its report, and the report written to ``docs/experiments/<preset>.md``.

The report asset of a preset experiment runs the preset's analysis (``evaluation.findings``) on its arms and writes
``finding.md``/``finding.json`` and the effect plots beside the comparison; ``lab report <preset> --docs`` then
assembles the committed page from the lab home alone: the published finding, the scale it ran at, the verdicts,
the law fit (law presets), the comparison and its figures. No number in it is typed by hand.
"""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from pathlib import Path

from evaluation.compare import ArmRecord
from evaluation.finding_plots import plot_effects, plot_stability_gap
from evaluation.findings import ArmInfo, Finding, Seeds, analyze, effects_table
from orchestration.config import REPO_ROOT, load_experiment
from orchestration.experiments import Experiment
from orchestration.presets import load_preset, preset_names, preset_of

FINDING_MODULES = ("evaluation.findings", "evaluation.finding_plots", "orchestration.preset_reports",
                   "orchestration.presets")


def by_arm(experiment: Experiment, records: list[ArmRecord]) -> dict[str, Seeds]:
    """The records of a preset experiment grouped as preset arm -> seed -> record."""
    grouped: dict[str, Seeds] = defaultdict(dict)
    for arm, record in zip(experiment.arms, records, strict=True):
        grouped[arm.params["arm"]][int(arm.params["train.seed"])] = record
    return dict(grouped)


def arm_info(experiment: Experiment) -> dict[str, ArmInfo]:
    """Tokens each preset arm's own run trains (a branch: after its branch step), from the first seed's config."""
    info = {}
    for arm in experiment.arms:
        cfg = load_experiment(arm.overrides)
        start = (cfg.parent.step or 0) if cfg.parent.experiment and cfg.parent.mode == "branch" else 0
        tokens_per_step = cfg.train.global_batch_size * cfg.train.seq_len
        info.setdefault(arm.params["arm"], ArmInfo((cfg.train.steps - start) * tokens_per_step, start))
    return info


def write_finding(experiment: Experiment, records: list[ArmRecord], out_dir: Path) -> Finding:
    """finding.json, finding.md and the finding's plots in the report's folder."""
    preset = preset_of(experiment)
    arms = by_arm(experiment, records)
    finding = analyze(preset.analysis, arms, arm_info(experiment))
    plots = []
    if finding.effects:
        plots.append(plot_effects(finding.effects, out_dir / "effects.png", preset.title).name)
    if "stability_gap" in preset.analysis:
        plots.append(plot_stability_gap(preset.analysis["stability_gap"], arms, out_dir / "stability_gap.png").name)
    verdicts = [verdict_intro(experiment), effects_table(finding.effects)] if finding.effects else \
        ["This preset's finding is its law fit (below): the held-out arm's prediction error against the criterion."]
    sections = ["## Verdicts", *verdicts,
                *(f"## {title}\n\n{table}" for title, table in finding.tables.items()),
                *(f"![{Path(plot).stem}]({plot})" for plot in plots)]
    (out_dir / "finding.md").write_text("\n\n".join(sections) + "\n")
    (out_dir / "finding.json").write_text(json.dumps(finding.to_json(), indent=2, sort_keys=True) + "\n")
    return finding


def verdict_intro(experiment: Experiment) -> str:
    seeds = sorted({int(arm.params["train.seed"]) for arm in experiment.arms})
    return (f"Each effect: arm minus the arm it is compared against, paired by seed, averaged over "
            f"{len(seeds)} seed(s) ({', '.join(map(str, seeds))}); its spread is the sample standard "
            "deviation of the paired differences. *held*: in the published direction and larger than the spread; "
            "*within spread*: in the published direction but not resolved at this scale; *not held*: the other "
            "direction; *no difference*: equal at every seed (the arms trained on the same data).")


def scale_text(experiment: Experiment) -> str:
    """The scale the preset ran at, read from its arms' configs."""
    cfgs = [load_experiment(arm.overrides) for arm in experiment.arms]
    model = cfgs[0].model
    steps = sorted({c.train.steps for c in cfgs})
    tokens_per_step = {c.train.global_batch_size * c.train.seq_len for c in cfgs}
    seeds = sorted({c.train.seed for c in cfgs})
    return (f"Model: {model.name}, {model.n_layers} layers, width {model.dim}, {model.n_heads} heads, vocabulary "
            f"{cfgs[0].tokenizer.vocab_size}; {', '.join(map(str, sorted(tokens_per_step)))} tokens per step, "
            f"runs of {', '.join(map(str, steps))} steps; {len({a.params['arm'] for a in experiment.arms})} arms x "
            f"{len(seeds)} seeds ({', '.join(map(str, seeds))}); parallelism {cfgs[0].parallel.nproc_per_node} "
            f"rank(s), {cfgs[0].train.dtype}.")


def write_docs(experiment: Experiment, report_dir: Path, law_dir: Path | None, root: Path = REPO_ROOT) -> Path:
    """``docs/experiments/<experiment>.md`` and its figures, from the report (and law fit) in the lab home."""
    preset = preset_of(experiment)
    page = root / "docs" / "experiments" / f"{experiment.name}.md"
    figures = page.with_suffix("")
    shutil.rmtree(figures, ignore_errors=True)
    figures.mkdir(parents=True)
    sources = [report_dir] + ([law_dir] if law_dir else [])
    for folder in sources:
        for plot in sorted(folder.glob("*.png")):
            shutil.copyfile(plot, figures / plot.name)
    relink = f"{figures.name}/"

    def demoted(markdown: str) -> str:  # the parts' headings one level down, their figures in the page's folder
        lines = [("#" + line if line.startswith("#") else line) for line in markdown.splitlines()]
        return "\n".join(lines).replace("](", "](" + relink).replace("](" + relink + "http", "](http")

    comparison = (report_dir / "comparison.md").read_text().split("\n", 1)[1].strip()  # without its title
    tiny = " --tiny" if preset.is_tiny else ""
    note = "The tiny, test-sized version of the preset." if preset.is_tiny else preset.scale_note
    parts = [f"# {preset.title}", f"**Published**: {preset.finding} ({preset.source})",
             f"**Ran here**: {scale_text(experiment)} {note}",
             f"Reproduce: `lab preset {preset.name}{tiny}` then `lab report {experiment.name} --docs` (this page). "
             f"The same preset on a GPU: add overrides, e.g. `lab preset {preset.name} model=<a larger model> "
             "parallel=gpu_fsdp`.",
             demoted((report_dir / "finding.md").read_text())]
    if preset.notes and not preset.is_tiny:
        parts.append(f"**Reading the result at this scale**: {preset.notes}")
    if law_dir is not None:
        parts.append(demoted((law_dir / "law.md").read_text()))
    parts += ["## The arms compared", demoted(comparison)]
    page.write_text("\n\n".join(parts) + "\n")
    write_index(page.parent)
    return page


def write_index(folder: Path) -> Path:
    """docs/experiments/README.md: every preset, linked where its page has been written."""
    rows = []
    for name in preset_names():
        preset = load_preset(name)
        page = folder / f"{name}.md"
        status = f"[report]({page.name})" if page.is_file() else "not run yet: `lab preset " + name + "`"
        rows.append(f"| `{name}` | {preset.title} | {preset.source} | {status} |")
    index = folder / "README.md"
    index.write_text("\n".join([
        "# Research presets", "",
        "Each page is written by `lab report <preset> --docs` from the lab home where `lab preset <preset>` ran; no "
        "number in them is typed by hand. What a preset is and how to run one: the README's \"Research presets\".",
        "", "| preset | finding | source | report |", "|---|---|---|---|", *rows]) + "\n")
    return index
