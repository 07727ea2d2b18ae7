"""Helpers for the tests of the cloud at scale (test_cloud_postgres.py, test_cloud_replicas.py,
test_rabbit_cluster.py; docs/deployment.md): PostgreSQL and a RabbitMQ cluster as fixtures,
skipped saying exactly what is missing when they cannot start; replicas of the service on
them; and whose socket a webhook attempt came from.
"""
import os

import pytest

from cloud_kit import Cloud
from tools.bench import postgres, rabbit


@pytest.fixture(scope="module")
def pg():
    why = postgres.missing()
    if why:
        pytest.skip(why)
    server = postgres.Postgres(durable=False).start()
    yield server
    server.stop()


@pytest.fixture
def pg_url(pg, request):
    """A fresh database of the module's server, for one test."""
    name = "t_" + "".join(ch if ch.isalnum() else "_" for ch in request.node.name)[:50]
    return pg.create_db(name.lower())


@pytest.fixture(scope="module")
def cluster():
    why = rabbit.missing()
    if why:
        pytest.skip(why)
    c = rabbit.Cluster(3)
    try:
        c.start()
    except Exception:
        c.stop()
        raise
    yield c
    c.stop()


class Replica(Cloud):
    """One replica of the service (cloud_kit.Cloud) on a database URL; its log in log_dir."""

    def __init__(self, broker, url, log_dir, *extra):
        super().__init__(broker, url, *extra)
        self.log = os.path.join(str(log_dir), "replica-%d.log" % self.port)


def replicas(n, broker, url, log_dir, *extra):
    return [Replica(broker, url, log_dir, *extra).start() for _ in range(n)]


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
