"""The mixture ledger: tokens per domain per phase, target against realized (its table and plot: ledger_report)."""

from __future__ import annotations

import numpy as np

from curation.packing import StreamIndex


def stream_ledger(index: StreamIndex, weights: dict[str, dict[str, float]]) -> dict[str, dict]:
    """Per phase of a written stream: its tokens and, per domain, weight, target and realized tokens and share."""
    ledger = {}
    for p, phase in enumerate(index.phases):
        start, end = index.phase_offsets[p], index.phase_offsets[p + 1]
        realized = dict(zip(index.domains, index.domain_tokens(np.array([start]), np.array([end])).tolist(),
                            strict=True))
        tokens = int(end - start)
        ledger[phase] = {
            "tokens": tokens,
            "domains": {
                d: {"weight": w, "target_tokens": round(w * tokens), "realized_tokens": realized[d],
                    "realized_share": realized[d] / tokens}
                for d, w in weights[phase].items()
            },
        }
    return ledger

