"""``tokenizer``: byte-level BPE trained on the training split of the filtered documents."""


from curation.tokenizer import train_tokenizer
from orchestration.resources import StageResult, StageRun


def build(run: StageRun) -> StageResult:
    cfg = run.cfg.tokenizer
    stats = train_tokenizer(cfg, run.upstream["filtered"] / "kept", run.output)
    return StageResult(stats, {"vocab_size": stats["vocab_size"]})
