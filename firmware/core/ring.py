# Fixed arrays of integer records that the control loop writes without allocating or
# locking, and the network side reads. One producer (the control loop), one consumer.
from array import array


class Ring:
    # (kind, time, arg) records for the network side to turn into events. The network
    # side drains it every 100 ms whether or not a broker is reachable, so it fills only in
    # a storm; then the newest record is lost (the producer may not move the consumer's
    # tail), and counted.
    def __init__(self, size=16):
        self._buf = array("i", [0] * (3 * size))
        self._size = size
        self._head = 0  # next slot to write (producer only)
        self._tail = 0  # next slot to read (consumer only)
        self.dropped = 0

    def push(self, kind, t, arg):
        nxt = (self._head + 1) % self._size
        if nxt == self._tail:
            self.dropped += 1
            return
        i = 3 * self._head
        self._buf[i] = kind
        self._buf[i + 1] = t
        self._buf[i + 2] = arg
        self._head = nxt

    def pop(self):
        if self._tail == self._head:
            return None
        i = 3 * self._tail
        rec = (self._buf[i], self._buf[i + 1], self._buf[i + 2])
        self._tail = (self._tail + 1) % self._size
        return rec


class Trace:
    # The last `size` mode transitions (time, from, to, cause), oldest overwritten: the
    # field's record of what the session did before something went wrong. The reader
    # copies without consuming, and retries if the producer moved meanwhile.
    def __init__(self, size=16):
        self._buf = array("i", [0] * (4 * size))
        self._size = size
        self._next = 0  # slot of the next record
        self._written = 0  # records written, saturating at size
        self._epoch = 0  # bumped on every push (wraps), so a reader can tell it moved

    def push(self, t, frm, to, cause):
        i = 4 * self._next
        self._buf[i] = t
        self._buf[i + 1] = frm
        self._buf[i + 2] = to
        self._buf[i + 3] = cause
        self._next = (self._next + 1) % self._size
        if self._written < self._size:
            self._written += 1
        self._epoch = (self._epoch + 1) & 0xFFFF

    def records(self):
        # Oldest first, as (time, from, to, cause) tuples (allocates: network side only).
        for _ in range(3):
            epoch = self._epoch
            n = self._written
            start = (self._next - n) % self._size
            out = []
            for k in range(n):
                i = 4 * ((start + k) % self._size)
                out.append((self._buf[i], self._buf[i + 1], self._buf[i + 2], self._buf[i + 3]))
            if epoch == self._epoch:
                return out
        return out
