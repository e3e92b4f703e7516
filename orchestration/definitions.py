"""The Dagster ``Definitions`` of the lineage, for the webserver (``make ui``) and for ``lab materialize``.

Each asset's ``code_version`` is the hash of its stage's code and config slice under the experiment's overrides,
and each materialization's data version is its output's content hash: Dagster's staleness view then says exactly
what ``lab plan`` says. The UI loads the overrides from ``LAB_OVERRIDES`` (space-separated), e.g.
``LAB_OVERRIDES="filter.prose.min_doc_words=30" make ui``.
"""

from __future__ import annotations

import os
import shlex

from dagster import AssetDep, AssetsDefinition, AssetSelection, Definitions, define_asset_job

from assets.checkpoint import checkpoint
from assets.corpus import corpus
from assets.eval import eval as eval_asset
from assets.filtered import filtered
from assets.mixed import mixed
from assets.parent import parent_checkpoint
from assets.tokenizer import tokenizer
from orchestration.config import compose_experiment
from orchestration.lineage import STAGE_BY_NAME, config_version
from orchestration.resources import LabResource

LINEAGE_ASSETS: tuple[AssetsDefinition, ...] = (corpus, filtered, tokenizer, mixed, checkpoint, eval_asset)


def versioned_assets(overrides: list[str]) -> list[AssetsDefinition]:
    """The lineage assets with code versions for this experiment's config.

    An experiment with a parent (continual pretraining, a WSD branch) also gets the `parent_checkpoint` asset,
    upstream of the stages that follow the parent, so the graph shows where training starts from.
    """
    cfg, _ = compose_experiment(overrides)
    has_parent = bool(cfg.parent.experiment)

    def versioned(spec):
        stage = STAGE_BY_NAME[spec.key.path[-1]]
        deps = [*spec.deps, AssetDep(parent_checkpoint.key)] if has_parent and stage.follows_parent else spec.deps
        return spec.replace_attributes(code_version=config_version(stage, cfg), deps=deps)

    assets = [asset.map_asset_specs(versioned) for asset in LINEAGE_ASSETS]
    return [parent_checkpoint, *assets] if has_parent else assets


def build_definitions(overrides: list[str]) -> Definitions:
    return Definitions(
        assets=versioned_assets(overrides),
        jobs=[define_asset_job("lineage", selection=AssetSelection.all(), tags={"lab/training": "true"},
                               description="Materialize the whole lineage corpus -> eval.")],
        resources={"lab": LabResource(overrides=overrides)},
    )


defs = build_definitions(shlex.split(os.environ.get("LAB_OVERRIDES", "")))
