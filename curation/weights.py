"""Which domains a mixture's weights name, and the error for weights that name a domain without documents.

Apart from ``curation.mixture`` (numpy, tokenizers) so that a plan can check weights before any stage runs.
"""

from __future__ import annotations

from curation.config import MixtureConfig, PhaseConfig


def missing_domains_error(key: str, missing: list[str], available: set[str], counted: str) -> ValueError:
    """The error for weights that name domains without documents: which ones, which domains exist, the fix."""
    example = ", ".join(f"{domain}: 1" for domain in sorted(available)[:3])
    return ValueError(
        f"{key} names domains with no {counted}: {missing}; domains with {counted}: {sorted(available)}. "
        f"Give weights for those domains only, e.g. 'mixture.weights={{{example}}}' "
        "(a mapping on the command line replaces the defaults), or 'mixture.weights={}' to mix every domain by "
        "its token count")


def weights_key(phase: PhaseConfig) -> str:
    """The config key of the weights a phase mixes by: its own, or mixture.weights."""
    return f"mixture.phases[{phase.name}].weights" if phase.weights else "mixture.weights"


def weight_settings(cfg: MixtureConfig) -> dict[str, dict[str, float]]:
    """Every weights setting the mixture reads, by config key; an empty mixture.weights mixes by token counts."""
    settings = {weights_key(phase): phase.weights or cfg.weights for phase in cfg.phases or [PhaseConfig()]}
    if cfg.replay.fraction:
        settings["mixture.replay.weights"] = cfg.replay.weights
    return settings


def check_weight_domains(cfg: MixtureConfig, domains: dict[str, int], counted: str = "documents") -> None:
    """Refuse weights for a domain without documents before anything is built.

    ``domains``: documents per domain, as far as they are known (the corpus, or what the filter kept); a zero
    weight may name an absent domain (it holds the domain out of training).
    """
    for key, weights in weight_settings(cfg).items():
        missing = sorted(d for d, w in weights.items() if w > 0 and not domains.get(d))
        if missing:
            raise missing_domains_error(key, missing, {d for d, n in domains.items() if n}, counted)
