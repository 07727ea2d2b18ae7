"""ESP-IDF NVS as it wears a real part: pages, entries, reclaims and sector erases.

What the ESP32 board's store does to flash (boards/esp32/esp32_board.NvsStore), laid out the
way ESP-IDF lays it out, so the bench can count erase cycles per 4 KB sector:

- A page is one 4096-byte flash sector: a 32-byte header, a 32-byte entry-state bitmap and
  126 entries of 32 bytes (ESP-IDF "Non-Volatile Storage Library", Pages and Entries).
- An integer value (our 4-byte words are i32) takes 1 entry. A blob takes a BLOB_DATA item
  (1 header entry + ceil(size / 32) data entries) and a BLOB_IDX item (1 entry).
- A write appends the new item to the active page, then marks the old one erased: entries
  are not reused until their page is erased.
- When the active page is full, the next free page becomes active. Only when fewer than two
  pages are free does NVS reclaim one (nvs_pagemanager.cpp, PageManager::requestNewPage):
  the full page with the fewest live entries is copied into the new page and erased. That
  erase is the wear: one cycle of one sector.

The default ESP32 partition table of MicroPython (partitions-4MiB.csv) gives NVS 0x6000
bytes: 6 pages. A NOR flash sector is rated for 100,000 erase cycles.
"""

ENTRIES = 126
ENTRY_BYTES = 32
CYCLES = 100000


def entries_for(nbytes):
    """Entries one write of a value of `nbytes` takes (the store's word/blob rule)."""
    if nbytes == 4:
        return 1
    return 1 + -(-nbytes // ENTRY_BYTES) + 1


class _Page:
    def __init__(self):
        self.written = 0  # entries consumed since the last erase
        self.live = {}  # key -> entries still valid here


class NvsModel:
    def __init__(self, pages=6):
        self.pages = [_Page() for _ in range(pages)]
        self.erases = [0] * pages
        self.free = list(range(1, pages))  # page indices, in the order they will be used
        self.full = []
        self.active = 0
        self.where = {}  # key -> page index of its live item
        self.entries_written = 0
        self.writes = 0

    def write(self, key, nbytes):
        n = entries_for(nbytes)
        if ENTRIES - self.pages[self.active].written < n:
            self._new_page()
        page = self.pages[self.active]
        page.written += n
        old = self.where.get(key)
        if old is not None:
            del self.pages[old].live[key]
        page.live[key] = n
        self.where[key] = self.active
        self.entries_written += n
        self.writes += 1

    def _new_page(self):
        self.full.append(self.active)
        if len(self.free) >= 2:
            self.active = self.free.pop(0)
            return
        victim = min(self.full, key=lambda i: sum(self.pages[i].live.values()))
        if sum(self.pages[victim].live.values()) >= ENTRIES:
            raise RuntimeError("NVS full: ESP_ERR_NVS_NOT_ENOUGH_SPACE")
        self.full.remove(victim)
        self.active = self.free.pop(0)
        target = self.pages[self.active]
        for key, n in self.pages[victim].live.items():  # copyItems
            target.live[key] = n
            target.written += n
            self.where[key] = self.active
        self.pages[victim] = _Page()
        self.erases[victim] += 1
        self.free.append(victim)

    def max_erases(self):
        return max(self.erases)


class WearStore:
    """A board store that also tells an NvsModel what it wrote (the bench's flash meter)."""

    def __init__(self, store, model):
        self.store = store
        self.model = model

    def read(self, key):
        return self.store.read(key)

    def write(self, key, data):
        self.store.write(key, data)
        self.model.write(key, len(data))
