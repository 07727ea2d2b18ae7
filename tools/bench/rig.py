"""A bench with the firmware on it, stepped in virtual time.

InProcessRig runs the firmware in this CPython process (fast unit tests); ProcessRig runs it
under the micropython binary and talks to it over the simulated board's link, so the real
interpreter is exercised. Both expose the same calls, so one scenario suite runs on both.
"""
import json
import os
import socket
import struct
import subprocess
import sys
import time

from .bench import Bench

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TICK_MS = 10
SERVICE_TICKS = 10
UNIX_BASE_MS = 1795478400000  # 2026-11-24T00:00:00Z at bench time 0


def cpython_paths():
    for sub in ("tools/shims", "firmware", "boards"):
        p = os.path.join(ROOT, sub)
        if p not in sys.path:
            sys.path.insert(0, p)


class Rig:
    """Bench stepping shared by both rigs; subclasses run the firmware's tick."""

    def __init__(self, state_dir, voltage=230, phases=1, max_current=32, device_id="charger-1",
                 cable_current=None, default_kw=None):
        self.state_dir = state_dir
        self.config = {"device_id": device_id, "supply_voltage": voltage, "phases": phases,
                       "max_current": max_current, "state_dir": state_dir}
        if cable_current:
            self.config["cable_current"] = cable_current
        if default_kw is not None:
            self.config["default_max_charge_rate"] = default_kw
        self.bench = Bench(voltage=voltage, phases=phases)
        self.prefix = "ev-charger/%s/" % device_id
        self.published = []  # (topic, payload dict or str, retain)
        self.powered = False

    # -- scenario calls
    def run(self, ms):
        for _ in range(max(1, ms // TICK_MS)):
            self.step()

    def run_until(self, predicate, limit_ms):
        start = self.bench.t
        while not predicate():
            if self.bench.t - start > limit_ms:
                raise AssertionError("condition not met within %d ms" % limit_ms)
            self.step()
        return self.bench.t - start

    def step(self):
        b = self.bench
        b.step(TICK_MS)
        if not self.powered:
            b.drive_outputs(0, False)  # no supply: no pilot voltage, contactor falls open
            return
        counts, drive = self._tick(b.t, self._inputs())
        b.drive_outputs(counts, drive)

    def _inputs(self):
        b = self.bench
        return (b.t, int(round(b.high * 1000)), int(round(b.low * 1000)), int(b.contactor),
                int(b.current * 10), int(b.current * b.voltage * b.phases),
                int(b.energy_wh), int(b.rcd_tripped))

    def ev(self, **fields):
        self.bench.set_ev(fields)

    def fault(self, name):
        self.bench.set_fault(name)

    def request(self, kind, payload):
        if not isinstance(payload, (bytes, bytearray)):
            payload = json.dumps(payload).encode()
        return json.loads(self._request(kind, bytes(payload)))

    def settings(self, **kw):
        body = {k: {"value": v, "unit": "kw"} for k, v in kw.items()}
        return self.request("settings", {"requestId": "s", "settings": body})

    def command(self, name, **extra):
        body = {"requestId": "c", "action": {"command": name}}
        body.update(extra)
        return self.request("commands", body)

    def read(self):
        return self.request("read", {"requestId": "r"})["data"]

    def events(self, kind=None):
        return [p for t, p, _ in self.published
                if t == self.prefix + "events" and (kind is None or p["type"] == kind)]

    def last_state(self):
        for t, p, _ in reversed(self.published):
            if t == self.prefix + "state":
                return p
        return None

    def _record(self, topic, payload, retain):
        try:
            payload = json.loads(payload)
        except ValueError:
            payload = bytes(payload).decode()
        self.published.append((topic, payload, retain))


class InProcessRig(Rig):
    """The firmware as CPython modules, called directly; storage via `store_factory`."""

    def __init__(self, state_dir, store_factory=None, **kw):
        super().__init__(state_dir, **kw)
        cpython_paths()
        self.store_factory = store_factory
        self.boot()

    def boot(self):
        import sim
        from agent import Agent
        store = self.store_factory() if self.store_factory else sim.FileStore(self.state_dir)
        self.board = sim.Board(dict(self.config), store)
        self.board.unix_base_ms = UNIX_BASE_MS
        self.board.now = self.bench.t
        self.powered = True
        self.bench.drive_outputs(self.board.pilot_counts, self.board.contactor_drive)
        self.agent = Agent(self.board)
        self.bench.drive_outputs(self.board.pilot_counts, self.board.contactor_drive)
        self._n = 0

    def power_cut(self):
        self.powered = False
        self.agent = self.board = None

    def factory_reset(self):
        self.board.reset_requested = True
        self.pump()

    def _tick(self, now, inputs):
        bd = self.board
        (bd.now, bd.high_mv, bd.low_mv, fb, bd.current_da, bd.power_w, bd.energy_wh,
         rcd) = inputs
        bd.feedback = bool(fb)
        bd.rcd_tripped = bool(rcd)
        self.agent.tick(now)
        self._n += 1
        if self._n >= SERVICE_TICKS:
            self._n = 0
            self.pump(now)
        return bd.pilot_counts, bd.contactor_drive

    def pump(self, now=None):
        import runner
        runner.pump(self.agent, lambda t, p, r: self._record(self.prefix + t, p, r),
                    self.bench.t if now is None else now)

    def _request(self, kind, payload):
        return self.agent.handle(kind, payload, self.bench.t)

    def close(self):
        pass


class ProcessRig(Rig):
    """The firmware under `micropython`, from `module_dir` (compiled .mpy or sources)."""

    def __init__(self, state_dir, module_dirs, heapsize="256K", **kw):
        super().__init__(state_dir, **kw)
        self.module_dirs = module_dirs
        self.heapsize = heapsize
        self.proc = None
        self.conn = None
        self.outputs = (10000, False)
        self.boot()

    def boot(self):
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        self.config["bench_port"] = srv.getsockname()[1]
        cfg_path = os.path.join(self.state_dir, "config.json")
        with open(cfg_path, "w") as f:
            json.dump(self.config, f)
        env = dict(os.environ, MICROPYPATH=":".join([".frozen"] + self.module_dirs))
        entry = os.path.join(ROOT, "boards", "sim_main.py")
        self.proc = subprocess.Popen(["micropython", "-X", "heapsize=" + self.heapsize, entry,
                                      cfg_path], env=env)
        srv.settimeout(0.2)
        deadline = time.monotonic() + 30
        while self.conn is None:
            try:
                self.conn, _ = srv.accept()
            except socket.timeout:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    srv.close()
                    raise RuntimeError("firmware did not start (exit %r)" % self.proc.poll())
        srv.close()
        self.conn.settimeout(None)
        self.conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.rfile = self.conn.makefile("rb")
        self.conn.sendall(b"U" + struct.pack("<q", UNIX_BASE_MS))
        self.powered = True
        self.outputs = self._read_until_outputs()
        self.bench.drive_outputs(*self.outputs)

    def _read_until_outputs(self):
        while True:
            kind = self._read(1)
            if kind == b"O":
                counts, drive = struct.unpack("<ii", self._read(8))
                return counts, bool(drive)
            if kind == b"M":
                retain, tlen = struct.unpack("<BH", self._read(3))
                topic = self._read(tlen).decode()
                (plen,) = struct.unpack("<I", self._read(4))
                self._record(topic, self._read(plen), bool(retain))
            else:
                raise RuntimeError("bad frame %r from the firmware" % kind)

    def _read(self, n):
        data = self.rfile.read(n)
        if len(data) != n:
            raise RuntimeError("firmware closed the link (exit %r)" % self.proc.poll())
        return data

    def _tick(self, now, inputs):
        self.conn.sendall(b"T" + struct.pack("<8i", *inputs))
        self.outputs = self._read_until_outputs()
        return self.outputs

    def _request(self, kind, payload):
        k = ("commands", "settings", "read").index(kind)
        self.conn.sendall(b"R" + struct.pack("<BH", k, len(payload)) + payload)
        # The reply comes during the next exchange: step one tick to collect it.
        before = len(self.published)
        self.step()
        for topic, body, _ in self.published[before:]:
            if topic == self.prefix + "responses":
                return json.dumps(body).encode() if not isinstance(body, str) else body
        raise RuntimeError("no reply to %s request" % kind)

    def power_cut(self):
        self.powered = False
        if self.proc:
            self.proc.kill()
            self.proc.wait()
        if self.conn:
            self.conn.close()
        self.proc = self.conn = None

    def pump(self, now=None):
        self.run(SERVICE_TICKS * TICK_MS)

    def factory_reset(self):
        self.conn.sendall(b"F")
        self.pump()

    def send_nowait(self, kind, payload):
        """Send a request and return at once: for cutting the power mid-request."""
        payload = json.dumps(payload).encode()
        k = ("commands", "settings", "read").index(kind)
        self.conn.sendall(b"R" + struct.pack("<BH", k, len(payload)) + payload)

    def close(self):
        self.power_cut()
