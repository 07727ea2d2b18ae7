# A fixed ring of (kind, time, arg) integer records: the control loop pushes without
# allocating or locking, the network side pops. One producer, one consumer.
from array import array


class Ring:
    def __init__(self, size=16):
        self._buf = array("i", [0] * (3 * size))
        self._size = size
        self._head = 0  # next slot to write (producer only)
        self._tail = 0  # next slot to read (consumer only)
        self.dropped = 0

    def push(self, kind, t, arg):
        nxt = (self._head + 1) % self._size
        if nxt == self._tail:
            self.dropped += 1  # full: the newest record is lost, never the older ones
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
