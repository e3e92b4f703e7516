"""Stage identity: which code edits re-run a stage, and outputs whose bytes do not depend on the clock.

Code versions of an edited copy of the repository are computed in a subprocess with the copy first on the path,
so the edits are real edits of real files, read the way `lab plan` reads them.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_training import make_corpus, run_job, synthetic_text, tiny_job

from curation.documents import DOCUMENTS_FILE, make_document, write_documents
from curation.tokenizer import TokenizerConfig, train_tokenizer
from orchestration.code_identity import module_digests
from orchestration.config import ExperimentConfig, lab_home, load_experiment
from orchestration.lineage import STAGE_BY_NAME, STAGES, code_version, plan
from orchestration.store import Manifest, Store, content_hash
from training.outputs import STEPS_FILE, SUMMARY_FILE, TIMINGS_FILE, run_summary, step_log, timing_log
from training.tracking import RunRecorder

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("assets", "curation", "evaluation", "kernels", "orchestration", "training")
# Imported by byte-deciding modules without deciding bytes, so their code must not enter any stage's identity:
# reporting (MLflow, Pipes, statistics); config schemas and the weights check (what they hold reaches a fingerprint
# by value, through the config slice); process supervision (children that die with their parent).
OUTSIDE_IDENTITY = {"training.tracking", "curation.filter_stats", "curation.config", "evaluation.config",
                    "curation.weights", "training.parent_death"}
WALL_CLOCK_KEYS = {"tokens_per_second", "mfu", "wall_seconds", "peak_memory_gib"}

# Run in a copy of the repository: its stages' code versions, its modules' digests and, given overrides, its plan.
IDENTITY = """
import json, sys
import orchestration.lineage as lineage
from orchestration.code_identity import module_digests
from orchestration.config import lab_home, load_experiment
from orchestration.store import Store
overrides, modules = json.loads(sys.argv[1]), json.loads(sys.argv[2])
found = {"file": lineage.__file__, "stages": {spec.name: lineage.code_version(spec) for spec in lineage.STAGES},
         "modules": module_digests(tuple(modules))}
if overrides:
    cfg = load_experiment(overrides)
    items = lineage.plan(cfg, Store(lab_home(cfg) / "store"))
    found["plan"] = {item.stage: [item.action, item.reason] for item in items}
print(json.dumps(found))
"""


def repository_modules() -> dict[str, Path]:
    """Every module of the source packages by dotted name (a package by its own name), with its file."""
    modules = {}
    for path in sorted(p for package in PACKAGES for p in (REPO / package).rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def copy_sources(root: Path) -> Path:
    """The source packages and the config groups, copied to root/repo."""
    copy = root / "repo"
    for folder in (*PACKAGES, "conf"):
        shutil.copytree(REPO / folder, copy / folder, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def identity(repo: Path, overrides: list[str] | None = None) -> dict:
    """What IDENTITY finds with `repo` first on the path (also its working directory, which `python -c` puts first)."""
    args = [json.dumps(overrides or []), json.dumps(list(repository_modules()))]
    env = {**os.environ, "PYTHONPATH": str(repo)}
    done = subprocess.run([sys.executable, "-c", IDENTITY, *args], cwd=repo, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-4000:]
    found = json.loads(done.stdout.splitlines()[-1])
    assert Path(found["file"]).is_relative_to(repo)  # the copy's code was read, not the original's
    return found


def original_identity() -> dict:
    """The same for this checkout, in this process."""
    return {"stages": {spec.name: code_version(spec) for spec in STAGES},
            "modules": module_digests(tuple(repository_modules()))}


def restyled(source: str) -> str:
    """The same code written otherwise: every docstring changed, a comment added, ast.unparse's layout."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
            body[0].value.value += " (Edited.)"
    return "# A comment that changes nothing.\n" + ast.unparse(tree) + "\n"


def edit(repo: Path, relative: str, old: str, new: str) -> None:
    path = repo / relative
    text = path.read_text()
    assert text.count(old) == 1, f"{relative} no longer holds {old!r}: update the test's edit"
    path.write_text(text.replace(old, new))


def test_comments_docstrings_and_layout_rerun_nothing(tmp_path: Path) -> None:
    copy = copy_sources(tmp_path)
    for original in repository_modules().values():
        path = copy / original.relative_to(REPO)
        source = path.read_text()
        path.write_text(restyled(source))
        assert path.read_text() != source
    original, edited = original_identity(), identity(copy)
    assert edited["modules"] == original["modules"]
    assert edited["stages"] == original["stages"]


def test_plots_tracking_and_cli_code_rerun_nothing(tmp_path: Path) -> None:
    # (training.export is not among them: eval's downstream tasks run the exported model.)
    copy = copy_sources(tmp_path)
    edited_modules = {
        "evaluation.plots": ("evaluation/plots.py", "ax.grid(alpha=0.3)\n    if", "ax.grid(alpha=0.5)\n    if"),
        "training.tracking": ("training/tracking.py", 'f"training finished: {brief}"', 'f"finished: {brief}"'),
        "orchestration.cli": ("orchestration/cli.py", 'print(f"\\nDone in', 'print(f"\\nFinished in'),
    }
    for relative, old, new in edited_modules.values():
        edit(copy, relative, old, new)
    original, edited = original_identity(), identity(copy)
    for module in edited_modules:
        assert edited["modules"][module] != original["modules"][module], module  # real code edits
    assert edited["stages"] == original["stages"]


def fake_outputs_of_everything(cfg: ExperimentConfig, store: Store) -> None:
    """Commit an output for every stage of the plan, as this checkout's code would (fingerprint, digests)."""
    # The per-domain counts the plan checks mixture weights against.
    stats = {"domains": {d: {"documents": 1} for d in cfg.mixture.weights}, "kept_by_domain": dict.fromkeys(
        cfg.mixture.weights, 1)}
    while pending := [item for item in plan(cfg, store) if item.action == "run"]:
        item = pending[0]
        assert item.fingerprint and item.upstream is not None, item.reason
        manifest = Manifest(item.stage, item.fingerprint, "", item.code_version, item.config or {},
                            {name: m.content_hash for name, m in item.upstream.items()}, stats,
                            code_modules=module_digests(STAGE_BY_NAME[item.stage].code_modules))

        def build(folder: Path, manifest: Manifest = manifest) -> Manifest:
            (folder / "data.txt").write_text(manifest.stage)
            return manifest

        store.commit(item.stage, item.fingerprint, build)


def test_a_loss_edit_reruns_training_and_the_plan_names_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The loss is decided in training.train (torchtitan's CrossEntropyLoss config): an edit there re-runs the
    checkpoint, and eval through the checkpoint's content hash, not through its own code."""
    monkeypatch.setenv("LAB_HOME", str(tmp_path / "lab"))
    overrides = ["experiment=tiny"]
    cfg = load_experiment(overrides)
    fake_outputs_of_everything(cfg, Store(lab_home(cfg) / "store"))
    copy = copy_sources(tmp_path)
    edit(copy, "training/train.py", "CrossEntropyLoss.Config(global_vocab_size=spec.model.vocab_size)",
         "CrossEntropyLoss.Config(global_vocab_size=spec.model.vocab_size + 1)")
    original, edited = original_identity()["stages"], identity(copy, overrides)
    assert [stage for stage in original if edited["stages"][stage] != original[stage]] == ["checkpoint"]
    planned = edited["plan"]
    assert [stage for stage, (action, _) in planned.items() if action == "run"] == ["checkpoint", "eval"]
    assert planned["checkpoint"][1] == "code changed: training.train"
    assert planned["eval"][1] == "upstream checkpoint will run"


def test_stage_lists_hold_every_module_their_modules_import() -> None:
    """A byte-deciding module's own imports decide bytes too, unless they only report."""
    listed = {spec.name: spec.code_modules for spec in STAGES}
    known = repository_modules()

    def covered(module: str, modules: tuple[str, ...]) -> bool:
        return any(module == m or module.startswith(m + ".") for m in modules)

    for stage, modules in listed.items():
        for module in (m for m in known if covered(m, modules)):
            tree = ast.parse(known[module].read_text())
            for node in ast.walk(tree):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
                if isinstance(node, ast.ImportFrom) and node.module:
                    # `from package import module` imports the module; `from module import name`, the module.
                    names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module
                             for a in node.names]
                for name in (n for n in names if n in known):
                    assert covered(name, modules) or name in OUTSIDE_IDENTITY, \
                        f"{stage}: {module} imports {name}"


def test_report_folder_and_manifest_are_not_content(tmp_path: Path) -> None:
    (tmp_path / "shards").mkdir()
    (tmp_path / "shards" / "a.bin").write_bytes(b"tokens")
    first = content_hash(tmp_path)
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "timings.jsonl").write_text('{"tokens_per_second": 1}\n')
    (tmp_path / "manifest.json").write_text("{}")
    assert content_hash(tmp_path) == first
    (tmp_path / "shards" / "report.png").write_bytes(b"not in report/")
    assert content_hash(tmp_path) != first


def test_the_tokenizer_rebuilt_has_the_same_content_hash(tmp_path: Path) -> None:
    documents = [make_document(synthetic_text(40, seed), "docs", f"d{seed}.txt") for seed in range(30)]
    (tmp_path / "kept").mkdir()
    write_documents(tmp_path / "kept" / DOCUMENTS_FILE, documents)
    for build in ("a", "b"):
        train_tokenizer(TokenizerConfig(vocab_size=400), tmp_path / "kept", tmp_path / build)
    assert content_hash(tmp_path / "a") == content_hash(tmp_path / "b")


METRICS = {"loss_metrics/global_avg_loss": 2.5, "lr/AdamW": 1e-3, "grad_norm": 0.7, "tflops": 6.0,
           "memory/max_reserved(GiB)": 1.5, "n_tokens_seen": 1024}


def test_step_log_holds_no_wall_clock_figures(tmp_path: Path) -> None:
    """Two runs at different speeds log the same content; their speeds go to report/ only."""
    for run, throughput in (("fast", 2000.0), ("slow", 500.0)):
        recorder = RunRecorder(2, None, None, tmp_path / run, peak_flops=100e12)
        for step in (1, 2):
            recorder.log({**METRICS, "throughput(tps)": throughput}, step)
        recorder.close()
        summary = run_summary(recorder.loss_curve, 2, 2048)
        (tmp_path / run / SUMMARY_FILE).write_text(json.dumps(summary))
        assert not WALL_CLOCK_KEYS & summary.keys()
        assert [set(row) for row in step_log(tmp_path / run).values()] == [{"step", "loss", "lr", "grad_norm"}] * 2
        assert timing_log(tmp_path / run)[2]["tokens_per_second"] == 2 * throughput
    assert (tmp_path / "fast" / STEPS_FILE).read_bytes() == (tmp_path / "slow" / STEPS_FILE).read_bytes()
    assert (tmp_path / "fast" / TIMINGS_FILE).read_bytes() != (tmp_path / "slow" / TIMINGS_FILE).read_bytes()
    assert content_hash(tmp_path / "fast") == content_hash(tmp_path / "slow")


def test_a_training_run_rebuilt_has_the_same_content_hash(tmp_path: Path) -> None:
    """Two CPU ranks, ten steps, twice: checkpoints (DCP metadata included), step log and summary are equal."""
    corpus = make_corpus(tmp_path)
    for build in ("a", "b"):
        run_job(tiny_job(corpus, tmp_path / build, steps=10))
    assert (tmp_path / "a" / "checkpoint" / "step-10" / ".metadata").is_file()
    assert content_hash(tmp_path / "a") == content_hash(tmp_path / "b")
