# Events waiting for the uplink, oldest first. The worker and the request handler put; the
# uplink takes the oldest and removes exactly that one once the broker has it (QoS 1), so
# an event that arrives while another is being published can never take its place.
import _thread


class Outbox:
    def __init__(self, size=16):
        self._items = []  # (payload bytes, action id or None), oldest first
        self._size = size
        self._lock = _thread.allocate_lock()
        self.dropped = 0

    def put(self, payload, action_id=None):
        with self._lock:
            self._items.append((payload, action_id))
            if len(self._items) > self._size:
                # While the broker is away: drop the oldest event that does not end an
                # action (those must arrive; actions.py keeps them to a few).
                for i in range(len(self._items)):
                    if self._items[i][1] is None:
                        self._items.pop(i)
                        break
                else:
                    self._items.pop(0)
                self.dropped += 1

    def first(self):
        with self._lock:
            return self._items[0] if self._items else None

    def done(self, item):
        with self._lock:
            if self._items and self._items[0] is item:
                self._items.pop(0)

    def __len__(self):
        return len(self._items)
