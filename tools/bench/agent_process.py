"""The firmware under a micropython binary, on the simulated board's link (boards/sim/sim_link.py).

One object per power-on: it spawns the interpreter, accepts its link, and exchanges tick
frames; kill() is a power cut (the process dies mid-whatever; flash keeps what was renamed).
"""
import json
import os
import socket
import struct
import subprocess
import time

from tools.paths import cpython_paths, micropython

cpython_paths()
from sim_link import (BUTTON, CLOCK, INPUTS, MESSAGE, OUTPUTS, PUBLISH, REQUEST,  # noqa: E402
                      TICK)
from sim_main import RESTART_EXIT  # noqa: E402
from topics import REQUESTS  # noqa: E402

BOOT_S = 60  # from the link's accept to the boot state (the wheel at load 20: under 10 s)
MAX_BOOT_RESETS = 10  # more than an update's 3 trial boots and the boot that rolls it back


class AgentProcess:
    def __init__(self, config, build, unix_base_ms, heapsize="256K", on_publish=None,
                 quiet=False):
        """build: one of tools.paths.BUILDS (which interpreter, agent frozen or .mpy);
        unix_base_ms: the board's Unix time at bench time 0 (None: never set)."""
        self.on_publish = on_publish or (lambda topic, payload, retain: None)
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        config = dict(config, bench_port=srv.getsockname()[1])
        self.config_path = os.path.join(config["state_dir"], "config.json")
        with open(self.config_path, "w") as f:
            json.dump(config, f)
        exe, env = micropython(build)
        self.resets = 0  # resets at boot, before its first outputs (a version failing there)
        out = subprocess.DEVNULL if quiet else None
        self.conn = None
        try:
            while True:
                # Its own session: a Ctrl-C at the terminal reaches the bench, which then
                # cuts the agent's power itself, instead of interrupting it mid-sentence.
                self.proc = subprocess.Popen(exe + ["-X", "heapsize=" + heapsize, "-m",
                                                    "sim_main", self.config_path], env=env,
                                             stdout=out, start_new_session=True)
                self.conn = self._accept(srv)
                if self.conn is not None:
                    try:
                        self._handshake(unix_base_ms)
                        break
                    except (RuntimeError, OSError):  # the link closed in the handshake
                        if self.exit_status() != RESTART_EXIT:
                            self.kill()
                            raise
                    self.conn.close()
                # It reset at boot (sim_main's RESTART_EXIT) before its first outputs, as a
                # board does on anything raised there: it powers on again, as a board does
                # after its reset, and its boot layer counts the boot (an update's trial,
                # docs/ota.md).
                self.resets += 1
                if self.resets > MAX_BOOT_RESETS:
                    raise RuntimeError("firmware reset at each of %d boots" % self.resets)
        finally:
            srv.close()

    def _handshake(self, unix_base_ms):
        # The boot state comes before any tick, from the control loop's first pass: a
        # firmware that never gets there (its wiring raised in a thread, and nothing ended
        # the process) is killed and reported, never waited for.
        self.conn.settimeout(BOOT_S)
        self.conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.rfile = self.conn.makefile("rb")
        if unix_base_ms is not None:  # None: a board whose clock is never set
            self.conn.sendall(struct.pack("<Bq", CLOCK, unix_base_ms))
        try:
            self.outputs = self.read_outputs()
        except RuntimeError:
            if self.exit_status() is not None:  # it ended: its own exit says why (a reset)
                raise
            self.kill()
            raise RuntimeError("firmware gave no outputs within %d s of its link" % BOOT_S)
        self.conn.settimeout(None)

    def _accept(self, srv):
        """The link, or None when the process reset before it came up."""
        srv.settimeout(0.2)
        deadline = time.monotonic() + 30
        while True:
            try:
                return srv.accept()[0]
            except socket.timeout:
                status = self.proc.poll()
                if status == RESTART_EXIT:
                    return None
                if status is not None or time.monotonic() > deadline:
                    self.kill()
                    raise RuntimeError("firmware did not start (exit %r)" % status)

    def read_outputs(self):
        while True:
            kind = self._read(1)[0]
            if kind == OUTPUTS:
                counts, drive, phase = struct.unpack("<iii", self._read(12))
                return counts, bool(drive), bool(phase)
            if kind != PUBLISH:
                raise RuntimeError("bad frame %r from the firmware" % chr(kind))
            retain, tlen = struct.unpack("<BH", self._read(3))
            topic = self._read(tlen).decode()
            (plen,) = struct.unpack("<I", self._read(4))
            self.on_publish(topic, self._read(plen), bool(retain))

    def _read(self, n):
        try:
            data = self.rfile.read(n)
        except OSError:  # reset: it closed the link with a tick of ours unread
            data = b""
        if len(data) != n:
            raise RuntimeError("firmware closed the link (exit %r)" % self.proc.poll())
        return data

    def tick(self, inputs):
        """inputs: the board's inputs in the order of sim_link.INPUTS."""
        try:
            self.conn.sendall(struct.pack("<B%di" % len(INPUTS), TICK, *inputs))
        except OSError:
            raise RuntimeError("firmware closed the link (exit %r)" % self.proc.poll())
        self.outputs = self.read_outputs()
        return self.outputs

    def send_request(self, kind, payload):
        self.conn.sendall(struct.pack("<BBH", REQUEST, REQUESTS.index(kind), len(payload)) +
                          payload)

    def send_message(self, topic, payload):
        """A message on a topic the agent subscribes to beyond its own (a site's)."""
        t = topic.encode()
        self.conn.sendall(struct.pack("<BH", MESSAGE, len(t)) + t +
                          struct.pack("<H", len(payload)) + payload)

    def factory_reset(self):
        self.conn.sendall(bytes((BUTTON,)))

    def exit_status(self, wait_s=2):
        """The process's exit status once it has ended (None if it is still running)."""
        try:
            return self.proc.wait(wait_s)
        except subprocess.TimeoutExpired:
            return None

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        if self.conn:
            self.conn.close()
            self.conn = None
