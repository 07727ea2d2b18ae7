"""Simulated flash that can lose power at any byte: the bench's power-cut injector.

It stands in for the file system under boards/sim.FileStore (its open and rename), keeps
files in memory, and after `budget` more bytes written raises PowerCut, leaving the file
being written torn exactly there. rename is atomic, as on littlefs and POSIX.
"""


class PowerCut(BaseException):  # not an error the firmware could catch: the power is gone
    pass


class _Writer:
    def __init__(self, fs, path):
        self.fs = fs
        self.path = path
        fs.files[path] = b""

    def write(self, data):
        data = bytes(data)
        if self.fs.budget is not None:
            if len(data) > self.fs.budget:
                self.fs.files[self.path] += data[:self.fs.budget]
                self.fs.budget = 0
                raise PowerCut()
            self.fs.budget -= len(data)
        self.fs.files[self.path] += data
        return len(data)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class _Reader:
    def __init__(self, data):
        self.data = data

    def read(self):
        return self.data

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class CuttableFlash:
    def __init__(self):
        self.files = {}
        self.budget = None  # bytes that may still be written before the power goes
        self.renames = 0

    def open(self, path, mode="rb"):
        if "w" in mode:
            return _Writer(self, path)
        if path not in self.files:
            raise OSError(2, "no such file")
        return _Reader(self.files[path])

    def rename(self, src, dst):
        if self.budget == 0:
            raise PowerCut()
        self.files[dst] = self.files.pop(src)
        self.renames += 1
