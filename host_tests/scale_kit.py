"""Helpers for the tests of the cloud at scale (test_cloud_postgres.py, test_cloud_replicas.py,
test_rabbit_cluster.py; docs/deployment.md): replicas of the service, light chargers as a
process, and whose socket a webhook attempt came from. PostgreSQL and the RabbitMQ cluster
they run on are conftest.py's fixtures (pg, pg_url, cluster).
"""
import json
import os
import signal
import subprocess
import sys
import threading
import time

from cloud_kit import Cloud, Receiver
from tools.bench import children
from tools.bench.broker import free_port
from tools.paths import ROOT


class Replica(Cloud):
    """One replica of the service (cloud_kit.Cloud) on a database URL; its log in log_dir."""

    # Two or three start at once (replicas() below), each importing the service and
    # migrating: on 2 shared cores under load that took over 30 s.
    START_S = 90

    def __init__(self, broker, url, log_dir, *extra):
        super().__init__(broker, url, *extra)
        self.log_dir = str(log_dir)
        self.log = os.path.join(self.log_dir, "replica-%d.log" % self.port)

    def start(self):
        """As Cloud.start; a port taken between free_port() and the bind (parallel tests
        start many servers) is given up for another, once."""
        try:
            return super().start()
        except RuntimeError:
            if "address already in use" not in self.output():
                raise
        self.stop()
        self.port = free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        self.log = os.path.join(self.log_dir, "replica-%d.log" % self.port)
        return super().start()


class Brokers:
    """A broker address list ("h1:p1,h2:p2") where cloud_kit wants a broker."""

    def __init__(self, address):
        self.address = address


def replicas(n, broker, url, log_dir, *extra):
    """n replicas, started at once (each takes a few seconds to come up)."""
    made = [Replica(broker, url, log_dir, *extra) for _ in range(n)]
    errors = []

    def start(r):
        try:
            r.start()
        except Exception as e:  # raised below
            errors.append(e)
    threads = [threading.Thread(target=start, args=(r,)) for r in made]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        for r in made:
            r.stop()
        raise errors[0]
    return made


class Doubles:
    """tools/bench/fleet_double.py as a process: `count` light chargers on `brokers`."""

    def __init__(self, brokers, count, first=0, heartbeat_s=60, id_format="fleet-%05d",
                 complete_s=0.05):
        self.ids = [id_format % i for i in range(first, first + count)]
        self.count = count
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tools.bench.fleet_double", "--brokers", brokers,
             "--first", str(first), "--count", str(count), "--heartbeat", str(heartbeat_s),
             "--id-format", id_format, "--complete", str(complete_s)], cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True)
        children.adopt(self, self.stop)
        self.stats = {}
        self.back_ms = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.stats = json.loads(line)
            self.back_ms.extend(self.stats["back_ms"])

    def wait_ready(self, timeout_s=60):
        deadline = time.monotonic() + timeout_s
        while self.stats.get("ready") != self.count:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("doubles not ready: %s" % self.stats)
            time.sleep(0.1)
        return self

    def freeze(self):
        """Silent, connections open (SIGSTOP): no message, no will until the broker's
        keepalive gives up (1.5 x 30 s): a charger behind a dead broker node, as the
        cloud sees it."""
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self):
        self.proc.send_signal(signal.SIGCONT)

    def stop(self):
        """Every double says `offline` and disconnects, as a process that ends."""
        self.thaw()
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        children.release(self)


class SenderReceiver(Receiver):
    """cloud_kit.Receiver that also finds which of `pids` (the replicas' processes) made
    each attempt, while its connection is open: `senders`, in the order of `attempts`."""

    def __init__(self, secret=None):
        super().__init__(secret)
        self.pids = []
        self.senders = []
        outer, base = self, self.http.RequestHandlerClass

        class Handler(base):
            def do_POST(self):
                if outer.pids:
                    outer.senders.append(socket_owner(self.client_address[1], outer.pids))
                super().do_POST()
        self.http.RequestHandlerClass = Handler


def socket_owner(port, pids):
    """Which of `pids` holds the TCP socket bound to local port `port` on loopback (Linux
    /proc): the replica a webhook attempt came from."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(fields[9])
    for pid in pids:
        try:
            for fd in os.listdir("/proc/%d/fd" % pid):
                try:
                    link = os.readlink("/proc/%d/fd/%s" % (pid, fd))
                except OSError:
                    continue
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    return pid
        except FileNotFoundError:
            continue
    return None
