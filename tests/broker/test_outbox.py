"""broker.outbox: the in-flight window and the offline queue of one session."""

from __future__ import annotations

from broker.outbox import Outbox, Outgoing, Send


def _msg(n: int, qos: int = 1) -> Outgoing:
    return Outgoing("epns/v1/agents/a/cmd", f"m{n}".encode(), qos)


def test_qos0_is_sent_when_connected() -> None:
    box = Outbox(max_inflight=2, max_queued=2)
    message = _msg(0, qos=0)
    assert box.offer(message, connected=True) == ([Send(message, None)], None)
    assert (box.inflight, box.queued, box.dropped) == (0, 0, 0)


def test_qos0_is_not_stored_when_offline() -> None:
    box = Outbox(max_inflight=2, max_queued=2)
    assert box.offer(_msg(0, qos=0), connected=False) == ([], None)
    assert (box.inflight, box.queued) == (0, 0)
    assert box.resume() == []


def test_qos0_bypasses_a_full_window() -> None:
    box = Outbox(max_inflight=1, max_queued=5)
    box.offer(_msg(1), connected=True)
    box.offer(_msg(2), connected=True)
    qos0 = _msg(3, qos=0)
    sends, dropped = box.offer(qos0, connected=True)
    assert sends == [Send(qos0, None)]
    assert dropped is None
    assert (box.inflight, box.queued) == (1, 1)


def test_qos1_window_then_queue() -> None:
    box = Outbox(max_inflight=3, max_queued=10)
    sends = [box.offer(_msg(n), connected=True) for n in range(5)]
    assert sends[:3] == [
        ([Send(_msg(0), 1)], None),
        ([Send(_msg(1), 2)], None),
        ([Send(_msg(2), 3)], None),
    ]
    assert sends[3:] == [([], None), ([], None)]
    assert (box.inflight, box.queued) == (3, 2)


def test_ack_frees_a_slot_and_sends_the_next() -> None:
    box = Outbox(max_inflight=2, max_queued=10)
    for n in range(4):
        box.offer(_msg(n), connected=True)
    assert box.acked(2) == [Send(_msg(2), 3)]
    assert (box.inflight, box.queued) == (2, 1)
    assert box.acked(1) == [Send(_msg(3), 4)]
    assert (box.inflight, box.queued) == (2, 0)
    assert box.acked(3) == []
    assert box.acked(4) == []
    assert (box.inflight, box.queued) == (0, 0)


def test_unknown_or_repeated_ack() -> None:
    box = Outbox(max_inflight=2, max_queued=10)
    assert box.acked(1) is None
    box.offer(_msg(0), connected=True)
    assert box.acked(7) is None
    assert box.inflight == 1
    assert box.acked(1) == []
    assert box.acked(1) is None


def test_offline_qos1_is_queued_then_sent_on_resume() -> None:
    box = Outbox(max_inflight=2, max_queued=10)
    for n in range(3):
        assert box.offer(_msg(n), connected=False) == ([], None)
    assert (box.inflight, box.queued) == (0, 3)
    assert box.resume() == [Send(_msg(0), 1), Send(_msg(1), 2)]
    assert (box.inflight, box.queued) == (2, 1)


def test_resume_resends_inflight_with_dup_then_fills() -> None:
    box = Outbox(max_inflight=3, max_queued=10)
    for n in range(3):
        box.offer(_msg(n), connected=True)  # ids 1, 2, 3 in flight
    box.acked(2)  # frees a slot; nothing queued yet
    # the connection drops; more messages arrive for the offline client
    for n in range(3, 6):
        assert box.offer(_msg(n), connected=False) == ([], None)
    assert (box.inflight, box.queued) == (2, 3)
    sends = box.resume()
    assert sends == [
        Send(_msg(0), 1, dup=True),
        Send(_msg(2), 3, dup=True),
        Send(_msg(3), 4),
    ]
    assert (box.inflight, box.queued) == (3, 2)
    # a second resume resends the same in-flight set, all with DUP
    assert box.resume() == [
        Send(_msg(0), 1, dup=True),
        Send(_msg(2), 3, dup=True),
        Send(_msg(3), 4, dup=True),
    ]


def test_queue_overflow_drops_the_oldest() -> None:
    box = Outbox(max_inflight=1, max_queued=2)
    box.offer(_msg(0), connected=False)
    box.offer(_msg(1), connected=False)
    assert box.dropped == 0
    assert box.offer(_msg(2), connected=False) == ([], _msg(0))
    assert box.offer(_msg(3), connected=False) == ([], _msg(1))
    assert box.dropped == 2
    assert box.queued == 2
    assert box.resume() == [Send(_msg(2), 1)]


def test_queue_overflow_while_the_window_is_full() -> None:
    box = Outbox(max_inflight=1, max_queued=1)
    box.offer(_msg(0), connected=True)  # in flight
    box.offer(_msg(1), connected=True)  # queued
    assert box.offer(_msg(2), connected=True) == ([], _msg(1))
    assert box.dropped == 1
    assert box.acked(1) == [Send(_msg(2), 2)]
    # in-flight messages are never dropped for room
    assert box.inflight == 1


def test_packet_ids_are_1_to_65535_and_skip_inflight_ids_across_wrap_around() -> None:
    box = Outbox(max_inflight=2, max_queued=1)
    first, _ = box.offer(_msg(0), connected=True)
    assert first == [Send(_msg(0), 1)]  # id 1 stays in flight throughout
    seen = []
    for n in range(1, 65_535):
        sends, _ = box.offer(_msg(n), connected=True)
        (send,) = sends
        seen.append(send.packet_id)
        assert box.acked(send.packet_id) == []
    assert seen == list(range(2, 65_536))
    # ids wrap from 65535 to 1, which is still in flight: it is skipped
    sends, _ = box.offer(_msg(-1), connected=True)
    assert [s.packet_id for s in sends] == [2]
    assert box.acked(1) == []
    assert box.acked(2) == []
    sends, _ = box.offer(_msg(-2), connected=True)
    assert [s.packet_id for s in sends] == [3]


def test_a_message_sent_at_once_makes_no_queue() -> None:
    """A connected client with a free window gets the message without the
    queue being made (an empty deque is 760 B per session that stays)."""
    box = Outbox(max_inflight=2, max_queued=10)
    sends, dropped = box.offer(_msg(1), connected=True)
    assert (sends, dropped) == ([Send(_msg(1), 1)], None)
    assert box._queued is None
    box.offer(_msg(2), connected=True)
    box.offer(_msg(3), connected=True)  # the window is full: now it queues
    assert box.queued == 1


def test_a_replay_of_retained_messages_is_not_cut_at_max_queued() -> None:
    """A server subscribing to 1,500 agents' retained presence gets all of
    them, through the window, though max_queued is 1,000 (the outbox used to
    drop the oldest 468 without a word)."""
    outbox = Outbox(max_inflight=32, max_queued=1000)
    messages = [Outgoing(f"p/{n}", b"x", 1, retain=True) for n in range(1500)]
    sent = outbox.replay(messages)
    assert len(sent) == 32
    assert outbox.queued == 1468
    delivered = [send.message.topic for send in sent]
    while sent:
        sent = [item for send in sent for item in (outbox.acked(send.packet_id or 0) or [])]
        delivered += [send.message.topic for send in sent]
    assert delivered == [f"p/{n}" for n in range(1500)]
    assert outbox.dropped == 0


def test_a_message_published_after_a_replay_goes_after_it() -> None:
    """The retained (older) state of a topic must not overtake a newer message."""
    outbox = Outbox(max_inflight=1, max_queued=10)
    first = outbox.replay([Outgoing("p/a", b"old", 1, retain=True),
                           Outgoing("p/b", b"old", 1, retain=True)])
    assert [send.message.topic for send in first] == ["p/a"]
    now, _ = outbox.offer(Outgoing("p/b", b"new", 1), connected=True)
    assert now == []
    following = outbox.acked(first[0].packet_id or 0) or []
    assert [send.message.payload for send in following] == [b"old"]
    last = outbox.acked(following[0].packet_id or 0) or []
    assert [send.message.payload for send in last] == [b"new"]
