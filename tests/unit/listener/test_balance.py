"""The accept decision that spreads associations over listener processes (listener/balance.py)."""

from __future__ import annotations

import multiprocessing

import pytest

from radnode.listener.balance import HOST_BUCKETS, AcceptBalance, Shared, new_shared


def _counts(*values: int) -> Shared:
    shared = new_shared(multiprocessing.get_context("spawn"), len(values))
    for i, v in enumerate(values):
        shared.loads[i] = v
    return shared


def test_the_least_busy_process_accepts_and_a_busier_one_waits() -> None:
    shared = _counts(1, 0)
    busy, idle = AcceptBalance(shared, 0), AcceptBalance(shared, 1)
    assert idle.may_accept(now=10.0)
    assert not busy.may_accept(now=10.0)
    idle.opened("10.0.0.1")  # now 1 and 1: both may race for the next one
    assert busy.may_accept(now=10.01) and idle.may_accept(now=10.01)


def test_a_busier_process_takes_the_connection_after_the_grace_period() -> None:
    """A process that is stuck or gone (its count never drops) cannot strand a connection."""
    busy = AcceptBalance(_counts(2, 0, 1), 0)
    assert not busy.may_accept(now=5.0)
    assert not busy.may_accept(now=5.0 + busy.grace / 2)
    assert busy.may_accept(now=5.0 + busy.grace * 1.01)
    # A connection long after starts a new wait.
    assert not busy.may_accept(now=5.0 + busy.grace + 2 * busy.episode)


def test_counts_follow_opened_and_closed_and_never_go_negative() -> None:
    shared = _counts(0, 0)
    mine = AcceptBalance(shared, 1)
    mine.opened("10.0.0.1")
    mine.opened("10.0.0.1")
    assert (shared.loads[0], shared.loads[1]) == (0, 2) and mine.held == 2
    mine.closed("10.0.0.1")
    mine.closed("10.0.0.1")
    mine.closed("10.0.0.1")
    assert mine.held == 0 and mine.connections_from("10.0.0.1") == 0


def test_a_process_that_does_not_serve_is_never_waited_for() -> None:
    """Slots start as not serving: before a process is ready (or after it died) the others take its share."""
    shared = new_shared(multiprocessing.get_context("spawn"), 2)
    first, second = AcceptBalance(shared, 0), AcceptBalance(shared, 1)
    first.serving()
    first.opened("10.0.0.1")
    assert first.may_accept(now=1.0)  # 1 against a process that is not serving yet
    second.serving()
    assert not first.may_accept(now=1.0) and second.may_accept(now=1.0)
    second.withdraw()
    second.opened("10.0.0.1")  # a connection it still finishes does not bring it back
    assert first.may_accept(now=2.0) and not second.least_busy()


def test_connections_from_an_address_are_counted_across_processes() -> None:
    shared = _counts(0, 0, 0)
    procs = [AcceptBalance(shared, slot) for slot in range(3)]
    procs[0].opened("10.0.0.9")
    procs[2].opened("10.0.0.9")
    procs[1].opened("10.0.0.7")
    assert [p.connections_from("10.0.0.9") for p in procs] == [2, 2, 2]
    assert procs[0].connections_from("10.0.0.7") == 1
    procs[2].forget_hosts()  # that process died with its connections
    assert procs[0].connections_from("10.0.0.9") == 1
    assert len(shared.hosts) == 3 * HOST_BUCKETS


def test_a_slot_outside_the_array_is_refused() -> None:
    with pytest.raises(ValueError):
        AcceptBalance(_counts(0, 0), 2)
