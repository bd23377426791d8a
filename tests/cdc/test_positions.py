"""Only positions Kafka acknowledged are confirmed, in commit order."""

from __future__ import annotations

from streams.cdc.transport import AckTracker


def test_confirms_only_after_every_message_of_the_transaction_is_acked() -> None:
    t = AckTracker()
    a = t.begin()
    t.sent(a, 2)
    t.commit(a, 100)
    assert t.confirmed == 0
    t.acked(a)
    assert t.confirmed == 0
    t.acked(a)
    assert t.confirmed == 100


def test_a_later_transaction_never_confirms_past_an_unacked_earlier_one() -> None:
    t = AckTracker()
    a = t.begin()
    t.sent(a)
    t.commit(a, 100)
    b = t.begin()
    t.sent(b)
    t.commit(b, 200)
    t.acked(b)
    assert t.confirmed == 0
    t.acked(a)
    assert t.confirmed == 200


def test_empty_transactions_confirm_at_commit_and_idle_keepalives_move_forward() -> None:
    t = AckTracker(confirmed=50)
    hb = t.begin()
    t.commit(hb, 80)
    assert t.confirmed == 80
    t.idle_position(120)
    assert t.confirmed == 120
    open_ = t.begin()
    t.idle_position(500)  # a transaction is open: its changes are not delivered yet
    assert t.confirmed == 120
    t.commit(open_, 130)
    assert t.confirmed == 130 and not t.in_flight_any
