"""What a worker should do in one claim round, from what the database shows: pure
functions, no I/O.

The fair share is water-filling: the active accounts are divided among the live,
non-draining workers, none above its ``capacity``; what a capped worker cannot take is
divided among the others. Targets are rounded up, so they always cover every account
when capacity allows, and two workers' targets differ by at most one.

A worker below its target claims free accounts (no live lease). A worker above its
target hands accounts over, but only while another worker has room for them and fewer
than ``max_moving`` handovers are in flight across the fleet (a handover is in flight
from the moment a worker marks it until the account is CONNECTED on the worker that
claimed it, so at most ``max_moving`` accounts are down for a rebalance at once): the
fleet evens out at about ``max_moving`` accounts per claim interval, without a
stampede.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import attrs

__all__ = ["Plan", "WorkerLoad", "fair_targets", "plan_round"]


@attrs.frozen
class WorkerLoad:
    """A live worker as its heartbeat row shows it."""

    worker_id: str
    capacity: int | None
    running: int
    draining: bool = False


@attrs.frozen
class Plan:
    """One round's decision for one worker."""

    target: int
    claim: int  # how many free accounts to try to claim
    hand_over: int  # how many of ours to hand over


def fair_targets(total: int, workers: Sequence[WorkerLoad]) -> dict[str, int]:
    """Each live, non-draining worker's share of ``total`` accounts (see the module)."""
    open_workers = [w for w in workers if not w.draining]
    targets = {w.worker_id: 0 for w in workers}
    remaining = total
    pending = sorted(open_workers, key=lambda w: (w.capacity is None, w.capacity or 0))
    while pending and remaining > 0:
        share = math.ceil(remaining / len(pending))
        worker = pending[0]
        if worker.capacity is not None and worker.capacity < share:
            # Capped below the even share: it takes its capacity, the rest share the rest.
            targets[worker.worker_id] = worker.capacity
            remaining -= worker.capacity
            pending.pop(0)
            continue
        for w in pending:
            targets[w.worker_id] = share
        break
    return targets


def plan_round(
    me: str,
    *,
    mine: int,
    total: int,
    workers: Sequence[WorkerLoad],
    free: int,
    in_flight: int,
    max_moving: int,
) -> Plan:
    """What worker ``me`` (holding ``mine`` accounts) does this round."""
    targets = fair_targets(total, workers)
    target = targets.get(me, 0)
    if mine < target:
        return Plan(target=target, claim=min(target - mine, free), hand_over=0)
    if mine > target:
        room = _room(me, targets, {w.worker_id: w for w in workers})
        slots = max(0, max_moving - in_flight)
        # Accounts already free (in flight or orphaned) fill the room first.
        room = max(0, room - free)
        return Plan(target=target, claim=0, hand_over=min(mine - target, slots, room))
    return Plan(target=target, claim=0, hand_over=0)


def _room(me: str, targets: Mapping[str, int], loads: Mapping[str, WorkerLoad]) -> int:
    """How many more accounts the other workers would take."""
    return sum(
        max(0, target - loads[worker].running) for worker, target in targets.items() if worker != me
    )
