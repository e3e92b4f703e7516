"""``parent_checkpoint``: the parent experiment's checkpoint that continual pretraining or a WSD branch starts from.

Present only when the experiment names a parent (``parent.experiment``). It builds nothing: it records which of the
parent's outputs and which step the child starts from, so the Dagster graph shows the link, and its data version
(the parent's content hash and step) marks the child stale when the parent is retrained or another step is chosen.
"""

from dagster import AssetExecutionContext, MaterializeResult, asset

from orchestration.resources import LabResource


@asset(group_name="lineage",
       description="The parent experiment's checkpoint and step this experiment's training starts from.")
def parent_checkpoint(context: AssetExecutionContext, lab: LabResource) -> MaterializeResult:
    return lab.link_parent(context)
