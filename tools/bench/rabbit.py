"""A RabbitMQ cluster with its MQTT plugin on this machine, for the cloud's tests and bench
(docs/deployment.md): Debian's `rabbitmq-server`, N nodes on loopback, each with its own
directories and ports, clustered with `rabbitmqctl join_cluster`, stopped at exit.

Everything is the run's own: its Erlang port mapper (epmd on a free port, ERL_EPMD_PORT), its
cookie ($HOME of the run), node names, AMQP, distribution and MQTT ports, so it meets no
other RabbitMQ on the machine. The server drops to the `rabbitmq` user under Debian's wrapper;
here /usr/lib/rabbitmq/bin's scripts run directly, as `rabbitmq` when we are root, and the
run's directory is theirs. The schedulers do not busy-wait (+sbwt none): three nodes on two
shared cores would otherwise spin. Persistent MQTT sessions live in quorum queues
(mqtt.durable_queue_type), replicated on every node: a session outlives its node's death.
Runs in the caller's thread.
"""
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import threading
import time

from tools.bench import children
from tools.bench.broker import free_port, wait_port

SBIN = "/usr/lib/rabbitmq/bin"
USER = "rabbitmq"
START_S = 90  # a node boots in ~10 s alone; three at once on two loaded cores take longer


def missing():
    """Why a RabbitMQ cluster cannot be started here, as a sentence; None if it can."""
    if not os.path.exists(os.path.join(SBIN, "rabbitmq-server")):
        return "RabbitMQ is not installed (apt-get install rabbitmq-server; .ci/run does)"
    if shutil.which("erl") is None:
        return "Erlang's erl is not on PATH (it comes with rabbitmq-server)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(USER)
        except KeyError:
            return "running as root and there is no `rabbitmq` user to run the nodes as"
    return None


def _each(job, nodes):
    """job(node) for every node at once (each rabbitmqctl is an Erlang VM of its own: ~1 s
    to start); the first failure is raised."""
    errors = []

    def run(n):
        try:
            job(n)
        except Exception as e:  # handed to the caller
            errors.append(e)
    threads = [threading.Thread(target=run, args=(n,)) for n in nodes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


class Node:
    def __init__(self, cluster, index):
        self.cluster = cluster
        self.index = index
        self.name = "%s-%d@localhost" % (cluster.tag, index)
        self.mqtt_port = free_port()
        self.amqp_port = free_port()
        self.dist_port = free_port()
        self.proc = None
        self.conf = os.path.join(cluster.dir, "node%d.conf" % index)
        self.pid_file = os.path.join(cluster.dir, "node%d.pid" % index)

    @property
    def address(self):
        return "127.0.0.1:%d" % self.mqtt_port

    def env(self):
        d = self.cluster.dir
        e = self.cluster.env()
        e.update({
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.amqp_port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_CONFIG_FILE": self.conf,
            "RABBITMQ_ADVANCED_CONFIG_FILE": os.path.join(d, "advanced.config"),
            "RABBITMQ_MNESIA_BASE": os.path.join(d, "mnesia"),
            "RABBITMQ_LOG_BASE": os.path.join(d, "log%d" % self.index),
            "RABBITMQ_FEATURE_FLAGS_FILE": os.path.join(d, "feature_flags%d" % self.index),
            "RABBITMQ_PLUGINS_EXPAND_DIR": os.path.join(d, "plugins%d" % self.index),
            "RABBITMQ_PID_FILE": self.pid_file,
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "+sbwt none +sbwtdcpu none +sbwtdio none",
        })
        return e

    def launch(self):
        """Start the node's VM (not waiting for it)."""
        with open(self.conf, "w") as f:
            f.write("listeners.tcp.1 = 127.0.0.1:%d\n"
                    "mqtt.listeners.tcp.1 = 127.0.0.1:%d\n"
                    "mqtt.allow_anonymous = true\n"
                    "mqtt.durable_queue_type = quorum\n"
                    "mqtt.tcp_listen_options.backlog = 4096\n"
                    "mqtt.tcp_listen_options.nodelay = true\n"
                    "loopback_users = none\n"
                    "log.file.level = warning\n" % (self.amqp_port, self.mqtt_port))
            f.write(self.cluster.extra_conf)
        self.cluster.own(self.conf)
        with open(os.path.join(self.cluster.dir, "node%d.out" % self.index), "ab") as out:
            # Its own session: killing it (a crash) is killing its process group.
            self.proc = subprocess.Popen([os.path.join(SBIN, "rabbitmq-server")],
                                         env=self.env(), cwd=self.cluster.dir,
                                         stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True,
                                         **self.cluster.as_user)
        children.adopt(self, self.stop)

    def wait(self, timeout_s=START_S):
        """Until the node runs its apps and its MQTT listener accepts."""
        deadline = time.monotonic() + timeout_s
        short = self.name.split("@")[0]
        while ("name %s " % short) not in self.cluster.epmd_names():  # await_startup fails
            if not self.running or time.monotonic() > deadline:  # until the VM registers
                raise RuntimeError("RabbitMQ node %s did not start:\n%s" % (
                    self.name, self.output()))
            time.sleep(0.3)
        try:
            self.cluster.ctl(self, "await_startup", "--timeout", str(int(timeout_s)),
                             timeout_s=timeout_s + 10)
        except RuntimeError as e:
            raise RuntimeError("%s\n%s" % (e, self.output()))
        wait_port(self.mqtt_port, max(1, deadline - time.monotonic()), self.proc)

    def output(self):
        """The tail of the node's console and of its log: why it did not start."""
        out = []
        for path in (os.path.join(self.cluster.dir, "node%d.out" % self.index),
                     os.path.join(self.cluster.dir, "log%d" % self.index, self.name + ".log")):
            try:
                with open(path, errors="replace") as f:
                    out.append(f.read()[-1500:])
            except OSError:
                pass
        return "\n".join(out)

    def wait_or_relaunch(self):
        """wait(); a node that fails to boot (Erlang's timeouts on a loaded machine) is
        killed and started once more."""
        try:
            self.wait()
        except (RuntimeError, subprocess.SubprocessError):
            self.kill()
            self.launch()
            self.wait()

    def start(self):
        self.launch()
        self.wait_or_relaunch()
        return self

    def kill(self):
        """A crash: SIGKILL to the node's whole process group, no goodbye to anyone."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None
        children.release(self)

    def stop(self):
        """A clean stop (rabbitmqctl stop), then the process group if it lingers."""
        if self.proc and self.proc.poll() is None:
            try:
                self.cluster.ctl(self, "stop", timeout_s=30)
                self.proc.wait(15)
            except (subprocess.SubprocessError, RuntimeError):
                pass
        self.kill()

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None


class Cluster:
    """N nodes clustered together. addresses: their MQTT listeners, 'host:port,...'."""

    def __init__(self, n=3, extra_conf=""):
        self.dir = tempfile.mkdtemp(prefix="rabbit-")
        children.adopt(self.dir, lambda: shutil.rmtree(self.dir, ignore_errors=True))
        self.tag = "evse" + os.path.basename(self.dir).split("-")[-1].lower().replace("_", "")
        self.epmd_port = free_port()
        self.extra_conf = extra_conf
        self.as_user = {}
        if os.geteuid() == 0:
            pw = pwd.getpwnam(USER)
            self.as_user = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
        cookie = os.path.join(self.dir, ".erlang.cookie")
        with open(cookie, "w") as f:
            f.write(os.urandom(16).hex().upper())
        os.chmod(cookie, 0o400)
        with open(os.path.join(self.dir, "enabled_plugins"), "w") as f:
            f.write("[rabbitmq_mqtt].\n")
        self.own(self.dir, cookie, os.path.join(self.dir, "enabled_plugins"))
        self.nodes = [Node(self, i + 1) for i in range(n)]

    def own(self, *paths):
        if self.as_user:
            for p in paths:
                os.chown(p, self.as_user["user"], self.as_user["group"])

    def env(self):
        e = dict(os.environ)
        low = free_port()
        e.update({"HOME": self.dir, "ERL_EPMD_PORT": str(self.epmd_port),
                  "RABBITMQ_CONF_ENV_FILE": os.path.join(self.dir, "rabbitmq-env.conf"),
                  "RABBITMQ_ENABLED_PLUGINS_FILE": os.path.join(self.dir, "enabled_plugins"),
                  "RABBITMQ_CTL_DIST_PORT_MIN": str(low),
                  "RABBITMQ_CTL_DIST_PORT_MAX": str(low)})
        e.pop("RABBITMQ_NODENAME", None)
        return e

    def ctl(self, node, *args, timeout_s=60):
        """rabbitmqctl against a node; its output, or RuntimeError saying why not."""
        env = node.env()
        env["RABBITMQ_CTL_DIST_PORT_MIN"] = env["RABBITMQ_CTL_DIST_PORT_MAX"] = str(free_port())
        r = subprocess.run([os.path.join(SBIN, "rabbitmqctl"), "-n", node.name, *args], env=env,
                           cwd=self.dir, stdin=subprocess.DEVNULL, capture_output=True,
                           text=True, timeout=timeout_s, **self.as_user)
        if r.returncode != 0:
            raise RuntimeError("rabbitmqctl %s on %s: %s" % (
                " ".join(args), node.name, (r.stderr or r.stdout).strip()[-1500:]))
        return r.stdout

    def epmd_names(self):
        return subprocess.run(["epmd", "-port", str(self.epmd_port), "-names"],
                              capture_output=True, text=True).stdout

    @property
    def addresses(self):
        return ",".join(n.address for n in self.nodes)

    def start(self):
        """Every node at once, then the others join the first."""
        children.adopt(self, self.stop)
        for n in self.nodes:
            n.launch()
        _each(lambda n: n.wait_or_relaunch(), self.nodes)
        first = self.nodes[0]

        def join(n):
            self.ctl(n, "stop_app")
            self.ctl(n, "join_cluster", first.name)
            self.ctl(n, "start_app")
            wait_port(n.mqtt_port, START_S, n.proc)
        _each(join, self.nodes[1:])
        return self

    def members(self, node=None):
        """The running nodes as `node` (default: the first running one) sees them."""
        node = node or next(n for n in self.nodes if n.running)
        out = self.ctl(node, "eval", "rabbit_nodes:all_running().")
        return sorted(n.name for n in self.nodes if n.name in out)

    def stop(self):
        for n in reversed(self.nodes):
            n.stop()
        subprocess.run(["epmd", "-port", str(self.epmd_port), "-kill"], env=self.env(),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        children.release(self)
