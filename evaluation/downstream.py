"""Downstream accuracy of a checkpoint: the lineage's own multiple-choice tasks, run by lm-evaluation-harness.

The checkpoint is exported to a Hugging Face folder (training.export) and run by lm-eval's ``HFLM`` on CPU, on the
task files of ``evaluation.downstream_tasks.build_tasks``. Nothing touches the network: the tasks are local JSON
lines, the model a local folder, and the Hugging Face libraries are told to stay offline.

    python -m evaluation.downstream --mixed M --tokenizer T --run R --model conf/model/llama_cpu.yaml --out O \
        [--eval-json E] [--steps 0 300]

evaluates the untrained model (step 0) and every checkpoint of the run R on the held-out documents of the
``mixed`` output M, and writes O/downstream.json and, given the run's eval.json, O/loss_vs_accuracy.png.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

# Read when the Hugging Face libraries are first imported, so set before anything imports them; where a process
# imported them already, nothing changes: the tasks and the model below are local files that never ask the hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import matplotlib  # noqa: E402

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import yaml  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

from evaluation.config import DownstreamConfig  # noqa: E402
from evaluation.downstream_tasks import MANIFEST, build_tasks, held_out_texts  # noqa: E402
from evaluation.perplexity import list_checkpoints  # noqa: E402
from training.config import ModelConfig  # noqa: E402

RESULTS_FILE = "downstream.json"


def task_results(hf_dir: Path, tasks_dir: Path, cfg: DownstreamConfig, seed: int = 0,
                 only: list[str] | None = None) -> dict[str, dict]:
    """Accuracy of the Hugging Face model in `hf_dir` on every task of `tasks_dir` (or those in `only`):
    task -> {"acc", "acc_stderr", "n", "chance"}."""
    from lm_eval import simple_evaluate  # heavy imports, only when evaluating
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    tasks = {t: info for t, info in json.loads((tasks_dir / MANIFEST).read_text())["tasks"].items()
             if only is None or t in only}
    if not tasks:
        raise ValueError(f"{tasks_dir} holds no task (see the skipped ones in its {MANIFEST})")
    model = HFLM(pretrained=str(hf_dir), device="cpu", batch_size=cfg.batch_size, dtype="float32")
    with tempfile.TemporaryDirectory() as cache:
        # The task YAMLs name their data relative to their folder; here it is named in full, and the datasets
        # library's Arrow cache goes to a scratch folder rather than the user's home. lm-eval takes the configs
        # inline (a dict is a whole task config to it, not overrides of an indexed task).
        specs = [yaml.safe_load((tasks_dir / f"{task}.yaml").read_text()) | {"dataset_kwargs": {
            "data_files": {"test": str(tasks_dir / f"{task}.jsonl")}, "cache_dir": cache}} for task in tasks]
        output = simple_evaluate(model=model, tasks=specs, task_manager=TaskManager(include_path=str(tasks_dir),
                                 include_defaults=False), log_samples=False, random_seed=seed,
                                 numpy_random_seed=seed, torch_random_seed=seed, fewshot_random_seed=seed)
    results = {}
    for task, info in tasks.items():
        numbers = output["results"][task]
        results[task] = {"acc": numbers["acc,none"], "acc_stderr": numbers["acc_stderr,none"],
                         "n": output["n-samples"][task]["effective"], "chance": info["chance"]}
    return results


def evaluate_downstream(checkpoint_dir: Path | None, model_cfg: ModelConfig, tokenizer_dir: Path, tasks_dir: Path,
                        cfg: DownstreamConfig, seed: int = 0, only: list[str] | None = None) -> dict[str, dict]:
    """Export the checkpoint (None: the untrained model of training seed `seed`) to a scratch Hugging Face folder
    and run the tasks of `tasks_dir` on it: task -> {"acc", "acc_stderr", "n", "chance"}."""
    from training.export import export_hf  # torchtitan: imported only when evaluating

    with tempfile.TemporaryDirectory() as scratch:
        hf_dir = export_hf(checkpoint_dir, tokenizer_dir, model_cfg, Path(scratch) / "hf", seed)
        return task_results(hf_dir, tasks_dir, cfg, seed, only)


def plot_loss_vs_accuracy(points: dict[int, tuple[float, dict[str, dict]]], path: Path, title: str) -> Path:
    """Task accuracy (with one-standard-error bars) against validation loss, one line per task across checkpoints:
    `points` maps each step to (validation loss, task results). Dotted grey lines mark chance."""
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    steps = sorted(points)
    tasks = sorted(points[steps[0]][1]) if steps else []
    for task in tasks:
        losses = [points[s][0] for s in steps]
        ax.errorbar(losses, [points[s][1][task]["acc"] for s in steps], marker="o", capsize=3,
                    yerr=[points[s][1][task]["acc_stderr"] for s in steps], label=task.removeprefix("lineage_"))
    for chance in sorted({points[steps[0]][1][task]["chance"] for task in tasks}):
        ax.axhline(chance, color="grey", linestyle=":", linewidth=1)
    ax.invert_xaxis()  # training lowers the loss: later checkpoints to the right
    ax.set(xlabel="validation loss (nats/token, mean over domains)", ylabel="accuracy", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mixed", type=Path, required=True, help="a `mixed` output: its held-out shards")
    parser.add_argument("--tokenizer", type=Path, required=True, help="the lineage's tokenizer output")
    parser.add_argument("--run", type=Path, required=True, help="a `checkpoint` output: its checkpoint/step-N")
    parser.add_argument("--model", type=Path, required=True, help="the run's model config: a conf/model/*.yaml")
    parser.add_argument("--out", type=Path, required=True, help="where the tasks and results go")
    parser.add_argument("--eval-json", type=Path, help="the run's eval.json (validation loss per step) for the plot")
    parser.add_argument("--seed", type=int, default=0, help="the training seed (the untrained model's weights)")
    parser.add_argument("--steps", type=int, nargs="*", help="only these steps (0: the untrained model); default all")
    args = parser.parse_args()
    cfg = DownstreamConfig(enabled=True)
    model_cfg = ModelConfig(**yaml.safe_load(args.model.read_text()))
    tokenizer = Tokenizer.from_file(str(args.tokenizer / "tokenizer.json"))
    tasks_dir = build_tasks(held_out_texts(args.mixed, tokenizer), tokenizer, args.out / "tasks", cfg)
    by_step = {}
    checkpoints = {0: None, **list_checkpoints(args.run)}
    for step, checkpoint in checkpoints.items():
        if args.steps and step not in args.steps:
            continue
        by_step[step] = evaluate_downstream(checkpoint, model_cfg, args.tokenizer, tasks_dir, cfg, args.seed)
        scores = ", ".join(f"{t} {r['acc']:.3f}±{r['acc_stderr']:.3f}" for t, r in by_step[step].items())
        print(f"step {step}: {scores}", flush=True)
    (args.out / RESULTS_FILE).write_text(json.dumps(by_step, indent=2))
    if args.eval_json:
        curve = json.loads(args.eval_json.read_text())["by_step"]
        mean_loss = {int(s): sum(r["loss"] for r in d.values()) / len(d) for s, d in curve.items()}
        points = {s: (mean_loss[s], by_step[s]) for s in by_step if s in mean_loss}
        print(plot_loss_vs_accuracy(points, args.out / "loss_vs_accuracy.png", "downstream accuracy against loss"))


if __name__ == "__main__":
    main()
