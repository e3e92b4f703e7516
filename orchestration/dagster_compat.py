"""Where the lab depends on Dagster's private internals: each fix here names the versions it was checked against.

**A step blocked by a pool busy-waits.** While a step waits for a pool slot (the ``training`` pool lets one
checkpoint step train at a time), Dagster's step loop asks ``InstanceConcurrencyContext.
interval_to_next_pending_claim_check`` how long to sleep before it looks again. In Dagster 1.13 that method returns
``min(0, seconds to the next check)``, never more than zero, so the loop never sleeps: every arm queued behind a
training spins at a full core until its slot frees (a fix was proposed upstream in dagster-io/dagster#20367 and
not merged). With two arms queued on a 2-core machine, the training they waited for got half the CPU. The
replacement returns the seconds until the next claim check that Dagster itself scheduled (its backoff: 1 s, growing
to 15 s). A queued step starts no later than before, since Dagster only retries its claim at that time anyway.
"""

from __future__ import annotations

import time

import dagster
from dagster._core.execution.plan.instance_concurrency_context import InstanceConcurrencyContext

CHECKED_VERSIONS = ("1.13.",)  # the series whose InstanceConcurrencyContext was read for this fix


def seconds_to_next_claim_check(context: InstanceConcurrencyContext) -> float:
    """How long a step loop with only blocked steps may sleep: until the earliest scheduled claim check."""
    if not context._pending_claims or not context._pending_timeouts:
        return 0.0
    return max(0.0, min(context._pending_timeouts.values()) - time.time())


def fix_pool_wait() -> None:
    """Make a step blocked by a pool sleep instead of spinning (see the module's docstring). Idempotent."""
    if not dagster.__version__.startswith(CHECKED_VERSIONS):
        raise RuntimeError(
            f"orchestration/dagster_compat.py was checked against Dagster {', '.join(CHECKED_VERSIONS)}x, not "
            f"{dagster.__version__}: read InstanceConcurrencyContext.interval_to_next_pending_claim_check in this "
            "version; if it no longer returns min(0, ...), remove fix_pool_wait, else add the version")
    InstanceConcurrencyContext.interval_to_next_pending_claim_check = seconds_to_next_claim_check
