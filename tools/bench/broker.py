"""Start an MQTT broker on a free loopback port: amqtt or Mosquitto.

amqtt 0.12 drops some QoS 0 requests (docs/protocol.md, "Brokers"): make sim and make bench
take Mosquitto where it is installed (preferred()) and fall back to amqtt.
"""
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from tools.bench import children
from tools.paths import ROOT


def _ephemeral_low():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default range starts here


def free_port():
    """A loopback port free now, for a server that a child process will bind. Taken below
    the kernel's ephemeral range: a port from bind(0) comes from that range, where any
    outgoing connection (make test's workers make thousands) may take it before the child
    binds it; below it only another server can, and the pick is random."""
    low = _ephemeral_low()
    for _ in range(50):
        port = random.randrange(max(1024, low - 12000), low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:  # a crowded range: the kernel's choice
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=20.0, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("broker exited with %s" % proc.returncode)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("broker did not listen on port %d" % port)


class Broker:
    """A broker process; stop() ends it, start() brings it back on the same port."""

    def __init__(self, kind="amqtt", port=None, tls=None, password_file=None):
        """tls: (CA, certificate, key) files for a TLS-only Mosquitto listener;
        password_file: Mosquitto's (mosquitto_passwd), and no anonymous clients."""
        self.kind = kind
        self.tls = tls
        self.password_file = password_file
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix="broker-")
        # Its files (config, log) stay for a restart on the same port, and go at exit.
        children.adopt(self.dir, lambda: shutil.rmtree(self.dir, ignore_errors=True))
        self.proc = None

    @staticmethod
    def mosquitto_available():
        return shutil.which("mosquitto") is not None

    @classmethod
    def preferred(cls):
        return "mosquitto" if cls.mosquitto_available() else "amqtt"

    def start(self):
        if self.kind == "amqtt":
            # amqtt with a fix for a lost QoS 1 request (the module says which).
            cmd = [sys.executable, "-m", "tools.bench.amqtt_broker", str(self.port)]
        else:
            conf = os.path.join(self.dir, "mosquitto.conf")
            with open(conf, "w") as f:
                f.write("listener %d 127.0.0.1\npersistence false\nset_tcp_nodelay true\n"
                        % self.port)
                if self.tls:
                    f.write("cafile %s\ncertfile %s\nkeyfile %s\n" % self.tls)
                f.write("password_file %s\n" % self.password_file if self.password_file
                        else "allow_anonymous true\n")
            cmd = ["mosquitto", "-c", conf]
        log = open(os.path.join(self.dir, "broker.log"), "ab")
        # Its own session: Ctrl-C reaches the launcher, which stops the broker last.
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                                     start_new_session=True)
        log.close()  # the broker has its own copy
        children.adopt(self, self.stop)  # stopped at exit even if no one calls stop()
        wait_port(self.port, proc=self.proc)
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        children.release(self)

    @property
    def address(self):
        return "127.0.0.1:%d" % self.port
