# runs-on: micropython
# heapsize: 96k
# The journal read the way the link reads it: a backlog one message at a time, each read going on
# from the last event sent (the journal resumes where the last read stopped in its segment), and
# back again for a resend. A file of its own: test_journal.py's power-cut test needs the heap its
# module leaves.
from test_journal import Rig, _seqs


def test_reads_in_steps_resume_where_the_last_stopped_and_go_back_for_a_resend():
    # The link reads a backlog one message at a time (journal.unacked(last sent)), across
    # segments, with appends and acks between reads, and from an earlier seq after a resend.
    r = Rig("steps", blocks=48, segment_bytes=2048)
    r.open()
    for _ in range(40):
        r.record(10)
    assert len(r.files()) > 3
    cur = n = 0
    while cur < r.j.committed:
        it = r.j.unacked(cur)
        for ev in it:
            assert ev.seq == cur + 1, (ev.seq, cur)
            cur = ev.seq
            n += 1
            if n % 7 == 0:
                break
        it.close()
        if cur == 203:
            r.record(5)  # appended between two reads
            r.j.ack(150)  # and segments dropped
    assert cur == n == 405
    assert _seqs(r.j.unacked(160))[:3] == [161, 162, 163]  # back, after the reads went on
    assert _seqs(r.j.unacked(0))[0] == 151  # from the ack: nothing below it
    ahead = r.j.unacked(300)
    assert next(ahead).seq == 301
    ahead.close()
    assert _seqs(r.j.unacked(299))[:2] == [300, 301]
    r.done()
