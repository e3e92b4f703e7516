"""Whether a published finding held here: effects between a preset's arms, paired by seed, against the seed spread.

A preset's ``analysis`` (conf/preset/*.yaml) lists *effects*: arm A against arm B on a metric (the final validation
loss over some domains), with the published direction ("lower": A below B, "higher", or "close": within a relative
tolerance). Each effect is the mean over seeds of the paired difference A - B, and its spread the sample standard
deviation of those differences (ddof=1). The verdict:

    held            the mean difference is in the published direction and larger than the seed spread
    within spread   in the published direction, but not larger than the seed spread: not resolved at this scale
    not held        against the published direction (beyond the spread: "reversed")
    no difference   the two arms' metrics are equal at every seed: they trained on the same data (nothing to test)

Optional parts of an analysis: ``compute`` (tokens trained by families of arms, e.g. WSD branches against a cosine
run per budget), ``tokens_to_match`` (tokens an arm needs to reach another arm's final loss: MeCo) and
``stability_gap`` (the worst loss on old domains in a child's first steps: continual pretraining).
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field

from evaluation.compare import ArmRecord, mean_curve, token_weighted_loss, tokens_to_target, validation_curve

Seeds = dict[int, ArmRecord]  # seed -> the arm's record at that seed


@dataclass
class ArmInfo:
    """What the analysis needs to know of an arm beyond its outputs."""

    own_tokens: int  # tokens its own training run consumed (a branch: only after its branch step)
    start_step: int = 0  # the parent's step it started from (0: from scratch)


@dataclass
class Effect:
    name: str
    metric: str
    arm: str
    against: str
    expected: str  # lower | higher | close
    values: dict[int, float]  # seed -> metric of ``arm``
    against_values: dict[int, float]
    tolerance: float = 0.0  # "close": the relative difference allowed
    mean: float | None = None  # mean paired difference arm - against
    relative: float | None = None  # mean difference / mean of ``against``
    spread: float | None = None  # sample standard deviation of the paired differences (None: one seed)
    seeds: int = 0
    verdict: str = ""

    def __post_init__(self) -> None:
        paired = [self.values[s] - self.against_values[s] for s in sorted(self.values) if s in self.against_values]
        if not paired:
            raise ValueError(f"effect {self.name!r}: no seed has both {self.arm} and {self.against}")
        self.seeds = len(paired)
        self.mean = statistics.fmean(paired)
        self.spread = statistics.stdev(paired) if len(paired) > 1 else None
        self.relative = self.mean / statistics.fmean(self.against_values.values())
        self.verdict = self._verdict()

    def _verdict(self) -> str:
        if all(self.values[s] == self.against_values.get(s) for s in self.values):
            return "no difference"
        if self.expected == "close":
            return "held" if abs(self.relative) <= self.tolerance else "not held"
        signed = -self.mean if self.expected == "lower" else self.mean  # > 0: the published direction
        beyond = self.spread is not None and abs(self.mean) > self.spread
        if signed > 0:
            return "held" if beyond else "within spread"
        return "not held (reversed beyond the seed spread)" if beyond else "not held"


@dataclass
class Finding:
    effects: list[Effect]
    tables: dict[str, str] = field(default_factory=dict)  # title -> markdown table
    numbers: dict = field(default_factory=dict)  # JSON-able extras (compute, tokens to match, stability gap)

    def to_json(self) -> dict:
        return {"effects": [asdict(e) for e in self.effects], "numbers": self.numbers}


def domains_of(spec: str | list | dict, record: ArmRecord) -> list[str]:
    """``all``, a list of domains, or ``{except: [...]}``: the domains a metric averages over."""
    if spec == "all":
        return sorted(record.final)
    if isinstance(spec, dict):
        return sorted(d for d in record.final if d not in spec["except"])
    return list(spec)


def final_loss(record: ArmRecord, domains: str | list | dict = "all") -> float:
    """The final validation loss, token-weighted over the metric's domains."""
    loss = token_weighted_loss(record.final, domains_of(domains, record))
    if loss is None:
        raise ValueError(f"arm {record.name} has no validation result on {domains}")
    return loss


def domains_label(domains: str | list | dict) -> str:
    if domains == "all":
        return "all domains"
    if isinstance(domains, dict):
        return f"all domains but {', '.join(domains['except'])}"
    return ", ".join(domains)


def metric_name(domains: str | list | dict) -> str:
    return f"final validation loss, {domains_label(domains)}"


def effect(spec: dict, arms: dict[str, Seeds]) -> Effect:
    domains = spec.get("domains", "all")
    values = {seed: final_loss(record, domains) for seed, record in arms[spec["arm"]].items()}
    against = {seed: final_loss(record, domains) for seed, record in arms[spec["against"]].items()}
    name = spec.get("name", f"{spec['arm']} against {spec['against']}")
    return Effect(name, metric_name(domains), spec["arm"], spec["against"], spec.get("expected", "lower"),
                  values, against, float(spec.get("tolerance", 0.0)))


def analyze(spec: dict, arms: dict[str, Seeds], info: dict[str, ArmInfo]) -> Finding:
    """The preset's effects and the optional parts its analysis names."""
    finding = Finding([effect(e, arms) for e in spec.get("effects", [])])
    if "compute" in spec:
        finding.numbers["compute"] = compute_families(spec["compute"], info)
        finding.tables["Compute"] = _compute_table(finding.numbers["compute"])
    if "tokens_to_match" in spec:
        finding.numbers["tokens_to_match"] = [tokens_to_match(m["arm"], m["against"], arms)
                                              for m in spec["tokens_to_match"]]
        finding.tables["Tokens to match"] = _match_table(finding.numbers["tokens_to_match"])
    if "stability_gap" in spec:
        finding.numbers["stability_gap"] = stability_gaps(spec["stability_gap"], arms)
        finding.tables["Stability gap"] = _gap_table(finding.numbers["stability_gap"], spec["stability_gap"])
    return finding


def compute_families(families: dict[str, list[str]], info: dict[str, ArmInfo]) -> dict:
    """Tokens trained to get every budget of each family; a branch counts only its own steps after the branch."""
    totals = {family: sum(info[arm].own_tokens for arm in members) for family, members in families.items()}
    most = max(totals.values())
    return {family: {"arms": members, "tokens": totals[family], "saved_vs_most": 1 - totals[family] / most}
            for family, members in families.items()}


def tokens_to_match(arm: str, against: str, arms: dict[str, Seeds]) -> dict:
    """Tokens ``arm`` (seed-mean curve) needs to reach the seed-mean final loss of ``against``, and the ratio."""
    curve = mean_curve([validation_curve(r, sorted(r.final)) for r in arms[arm].values()])
    target = statistics.fmean(final_loss(r) for r in arms[against].values())
    against_tokens = max(t for t, _ in mean_curve([validation_curve(r, sorted(r.final))
                                                      for r in arms[against].values()]))
    tokens = tokens_to_target(curve, target)
    return {"arm": arm, "against": against, "target_loss": target, "tokens": tokens,
            "against_tokens": against_tokens, "ratio": tokens / against_tokens if tokens is not None else None}


def stability_gaps(spec: dict, arms: dict[str, Seeds]) -> list[dict]:
    """Per arm and seed: the loss on the old domains at the start, its worst value in the first steps, the step."""
    rows = []
    for arm in spec["arms"]:
        for seed, record in sorted(arms[arm].items()):
            curve = {step: token_weighted_loss(results, domains_of(spec["domains"], record))
                     for step, results in sorted(record.val_curve.items())}
            start = min(curve)
            early = {s: loss for s, loss in curve.items() if s <= start + spec.get("within_steps", 20)}
            worst = max(early, key=lambda s: early[s])
            rows.append({"arm": arm, "seed": seed, "start_step": start, "start_loss": curve[start],
                         "worst_step": worst, "worst_loss": early[worst], "gap": early[worst] - curve[start],
                         "final_loss": curve[max(curve)], "evaluated_steps": sorted(early)})
    return rows


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def _signed(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:+.{digits}f}"


def effects_table(effects: list[Effect]) -> str:
    rows = [[e.name, e.metric, f"{e.expected} than {e.against}" if e.expected != "close" else
             f"within {e.tolerance:.1%} of {e.against}", _signed(e.mean), _signed(e.relative * 100, 2) + " %",
             "n/a (one seed)" if e.spread is None else f"{e.spread:.4f}", str(e.seeds), f"**{e.verdict}**"]
            for e in effects]
    return _table(["effect", "metric", "published direction", "mean difference", "relative", "seed spread (sd)",
                   "seeds", "verdict"], rows)


def _compute_table(compute: dict) -> str:
    return _table(["family", "arms", "tokens trained", "saved against the costliest family"],
                  [[family, ", ".join(row["arms"]), f"{row['tokens']:,}", f"{row['saved_vs_most']:.0%}"]
                   for family, row in compute.items()])


def _match_table(rows: list[dict]) -> str:
    return _table(["arm", "to reach the final loss of", "target loss", "tokens needed", "tokens of that arm",
                   "ratio"],
                  [[r["arm"], r["against"], f"{r['target_loss']:.4f}",
                    "not reached" if r["tokens"] is None else f"{r['tokens']:,.0f}", f"{r['against_tokens']:,}",
                    "n/a" if r["ratio"] is None else f"{r['ratio']:.2f}"] for r in rows])


def _gap_table(rows: list[dict], spec: dict) -> str:
    return _table(["arm", "seed", "start step", f"loss on {domains_label(spec['domains'])} at start",
                   "worst early loss", "at step", "gap", "final"],
                  [[r["arm"], str(r["seed"]), str(r["start_step"]), f"{r['start_loss']:.4f}",
                    f"{r['worst_loss']:.4f}", str(r["worst_step"]), _signed(r["gap"]), f"{r['final_loss']:.4f}"]
                   for r in rows])
