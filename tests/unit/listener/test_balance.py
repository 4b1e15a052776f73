"""The accept decision that spreads associations over listener processes (listener/balance.py)."""

from __future__ import annotations

import multiprocessing

import pytest

from radnode.listener.balance import AcceptBalance, new_counts


def _counts(*values: int):  # type: ignore[no-untyped-def]
    counts = new_counts(multiprocessing.get_context("spawn"), len(values))
    for i, v in enumerate(values):
        counts[i] = v
    return counts


def test_the_least_busy_process_accepts_and_a_busier_one_waits() -> None:
    counts = _counts(1, 0)
    busy, idle = AcceptBalance(counts, 0), AcceptBalance(counts, 1)
    assert idle.may_accept(now=10.0)
    assert not busy.may_accept(now=10.0)
    idle.opened()  # now 1 and 1: both may race for the next one
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
    counts = _counts(0, 0)
    mine = AcceptBalance(counts, 1)
    mine.opened()
    mine.opened()
    assert (counts[0], counts[1]) == (0, 2) and mine.held == 2
    mine.closed()
    mine.closed()
    mine.closed()
    assert mine.held == 0


def test_a_process_that_does_not_serve_is_never_waited_for() -> None:
    """Slots start as not serving: before a process is ready (or after it died) the others take its share."""
    counts = new_counts(multiprocessing.get_context("spawn"), 2)
    first, second = AcceptBalance(counts, 0), AcceptBalance(counts, 1)
    first.serving()
    first.opened()
    assert first.may_accept(now=1.0)  # 1 against a process that is not serving yet
    second.serving()
    assert not first.may_accept(now=1.0) and second.may_accept(now=1.0)
    second.withdraw()
    second.opened()  # a connection it still finishes does not bring it back
    assert first.may_accept(now=2.0) and not second.least_busy()


def test_a_slot_outside_the_array_is_refused() -> None:
    with pytest.raises(ValueError):
        AcceptBalance(_counts(0, 0), 2)
