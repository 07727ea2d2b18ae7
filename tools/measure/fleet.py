"""make bench: the cloud at scale (docs/deployment.md): 10,000 chargers, 1-2-3 replicas over
PostgreSQL, and failover measured, as one table. Usable alone:

    .venv/bin/python -m tools.measure.fleet [--chargers 10000] [--cluster-chargers 600]

Two halves, each bounded in time and count, on loopback only:

1. Scale, on Mosquitto: `--chargers` light doubles (tools/bench/fleet_double.py, 2,500 per
   process) plus two real agents (make sim's launcher: the firmware under micropython) against
   three replicas over PostgreSQL. Measured: what each replica holds (memory per 1,000
   chargers, broker connections), cached reads at full speed through 1, 2 and 3 replicas
   (closed loop, one load process per replica: the scaling ratio), cached reads paced at
   1,000/s, the live read and the command against the broker's own round trip, command ->
   push.completed webhook. Then under a steady load (reads and commands through every
   replica, as a load balancer spreads them): one replica killed (SIGKILL) and started again,
   and PostgreSQL crashed (immediate shutdown) and started again.
2. Failover of the broker, on a three-node RabbitMQ cluster (tools/bench/rabbit.py):
   `--cluster-chargers` doubles spread over the nodes and one real agent on the node that is
   killed under the same load, with all three nodes in its broker list: it moves to another
   before its node is started again (docs/deployment.md, "The agent's broker list").
   RabbitMQ 3.10 sets up a few dozen MQTT sessions a second when clustered (measured and
   printed), which is why the 10,000 are on Mosquitto and the cluster holds fewer.

Every failover row says: requests made and how each was answered (a connection cut by the
dying replica is what a load balancer turns into a 502; nothing may hang past the
documented bound), actions acknowledged (202) and how many of them are missing afterwards
from GET /actions, and push.completed webhooks missing (at least once, by stable event id).
"""
import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from tools.bench import children, postgres, rabbit
from tools.bench.broker import Broker
from tools.measure.cloud import KeepAlive, start_service
from tools.measure.fleet_load import (CLOSED_CONNECTIONS, CLOSED_S, REQUEST_BOUND_S, Hooks,
                                      Load, broker_rtt, call, closed_loop, describe, direct,
                                      lost, paced, pct)
from tools.paths import ROOT

PER_PROCESS = 2500  # doubles per fleet_double process
REPLICAS = 3
PACED_RATE = 1000
PACED_S = 5
SAMPLES = 60  # live reads and commands timed one at a time
WEBHOOK_TIMEOUT_S = 5  # the replicas' attempt bound: a dead replica's lease is this + 5 s
# How long the bench waits for the real agent to move off its dead node, before the node is
# started again: its backoff doubles per failed dial to 30 s (+50 %, door.py), so a few
# dials that fail while the cluster takes in a third of the fleet add up.
AGENT_MOVE_S = 90
REPLICA_ARGS = ["--webhook-timeout", str(WEBHOOK_TIMEOUT_S), "--retry-first", "0.5"]


def rss_mb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return 0.0


def held(port):
    """Established TCP connections to a local listening port (the broker's)."""
    n = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":
                    n += 1
    return n


def load_average():
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


class Fleet:
    """The doubles, as processes of PER_PROCESS each."""

    def __init__(self, brokers, count, heartbeat_s=60):
        self.count = count
        self.ids = ["fleet-%05d" % i for i in range(count)]
        self.stats = {}
        self.procs = []
        for first in range(0, count, PER_PROCESS):
            n = min(PER_PROCESS, count - first)
            p = subprocess.Popen([sys.executable, "-m", "tools.bench.fleet_double", "--brokers",
                                  brokers, "--first", str(first), "--count", str(n),
                                  "--heartbeat", str(heartbeat_s)], cwd=ROOT,
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            children.adopt(p, lambda p=p: p.stdin.close() or p.wait(30))
            self.procs.append(p)
            threading.Thread(target=self._read, args=(len(self.procs) - 1, p),
                             daemon=True).start()
        self.back_ms = []

    def _read(self, i, p):
        for line in p.stdout:
            s = json.loads(line)
            self.stats[i] = s
            self.back_ms.extend(s["back_ms"])

    def total(self, key):
        return sum(s.get(key, 0) for s in list(self.stats.values()))

    def wait_ready(self, timeout_s):
        deadline = time.monotonic() + timeout_s
        while self.total("ready") < self.count:
            if time.monotonic() > deadline or any(p.poll() is not None for p in self.procs):
                raise RuntimeError("the fleet did not connect: %d of %d ready in %d s" % (
                    self.total("ready"), self.count, timeout_s))
            time.sleep(0.2)

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                p.stdin.close()
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
            children.release(p)


class Agent:
    """make sim's launcher: one real agent (micropython) and its bench, on `broker`. Its
    output (the uplink's lines: each connect and each failure) goes to `log`, each line
    stamped with the bench's clock."""

    def __init__(self, broker, state_dir, device_id):
        self.id = device_id
        self.log = []  # (time.monotonic(), line)
        self.proc = subprocess.Popen(
            [sys.executable, "-u", "-m", "tools.bench.sim", "--broker", broker, "--state-dir",
             state_dir, "--device-id", device_id, "--no-page"], cwd=ROOT,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        threading.Thread(target=self._read, daemon=True).start()
        children.adopt(self, self.stop)

    def _read(self):
        for line in self.proc.stdout:
            self.log.append((time.monotonic(), line.rstrip()))

    def uplink_since(self, t0):
        """Its uplink lines after time.monotonic() `t0`, each "+S.S s line"."""
        return ["+%.1f s %s" % (t - t0, line) for t, line in list(self.log)
                if t >= t0 and line.startswith("uplink:")]

    def stop(self):
        children.interrupt(self.proc)
        children.release(self)


class Replica:
    def __init__(self, brokers, db, port=None):
        self.brokers, self.db = brokers, db
        self.proc, self.port = start_service(brokers, db, *REPLICA_ARGS, port=port)

    def kill(self):
        self.proc.kill()
        self.proc.wait()

    def restart(self):
        t0 = time.monotonic()
        self.proc, _ = start_service(self.brokers, self.db, *REPLICA_ARGS, port=self.port)
        return time.monotonic() - t0

    def stop(self):
        children.interrupt(self.proc)


def commit_ms(url, n=30):
    """One small durable transaction on PostgreSQL, timed (ms): what an acknowledged action
    waits for."""
    from tools.cloud import store as cloud_store
    from sqlalchemy import text

    async def go():
        s = cloud_store.Store(cloud_store.url_of(url))
        out = []
        try:
            async with s.begin() as conn:
                await conn.execute(text("CREATE TABLE IF NOT EXISTS bench_commit (n int)"))
            for i in range(n):
                t0 = time.perf_counter()
                async with s.begin() as conn:
                    await conn.execute(text("INSERT INTO bench_commit VALUES (%d)" % i))
                out.append((time.perf_counter() - t0) * 1000)
        finally:
            await s.close()
        return out
    return asyncio.run(go())


def _say(text):
    print("bench: " + text, flush=True)


def scale_half(state_dir, chargers, pg, rows, raw):
    """Mosquitto, `chargers` doubles and two agents, three replicas: the scale rows and the
    replica and database failovers."""
    broker = Broker(Broker.preferred()).start()
    db = pg.create_db("fleet")
    hooks = Hooks()
    replicas, fleet, agents = [], None, []
    try:
        _say("fleet: %d replicas on PostgreSQL ..." % REPLICAS)
        replicas = [Replica(broker.address, db) for _ in range(REPLICAS)]
        call(replicas[0].port, "POST", "/webhooks", {"url": hooks.url,
                                                     "events": ["push.completed"]})
        base_mb = [rss_mb(r.proc.pid) for r in replicas]
        broker_base_mb = rss_mb(broker.proc.pid)
        _say("fleet: %d chargers connecting ..." % chargers)
        t0 = time.monotonic()
        fleet = Fleet(broker.address, chargers)
        fleet.wait_ready(180)
        connect_s = time.monotonic() - t0
        agents = [Agent(broker.address, os.path.join(state_dir, "agent-%d" % i),
                        "agent-%d" % i) for i in (1, 2)]
        ids = fleet.ids
        # Every replica has heard every charger (each reported on connecting): a sample of
        # reads is all `cache`, on every replica.
        deadline = time.monotonic() + 120
        sample = random.sample(ids, 50) + [a.id for a in agents]
        while time.monotonic() < deadline:
            if all(call(r.port, "GET", "/ev-charger/" + d)[1].get("data", {}).get(
                    "metadata", {}).get("source") in ("cache", "live")
                   for r in replicas for d in sample):
                break
            time.sleep(1)
        time.sleep(3)  # the last state reports stored
        mem = [(rss_mb(r.proc.pid) - b) / (len(ids) / 1000) for r, b in zip(replicas, base_mb)]
        broker_mem = (rss_mb(broker.proc.pid) - broker_base_mb) / (len(ids) / 1000)
        connections = held(broker.port)
        rows.append(("fleet: chargers on one broker (Mosquitto)",
                     "%d light doubles (%d processes) connected and subscribed in %.1f s, plus "
                     "2 real agents (make sim)" % (len(ids), len(fleet.procs), connect_s),
                     "cloud.md: >= 10,000 chargers reporting"))
        rows.append(("fleet: broker connections held",
                     "%d (the chargers, their 2 benches, %d replicas); broker memory %.1f MB "
                     "per 1,000 chargers" % (connections, REPLICAS, broker_mem),
                     "Mosquitto, one process"))
        rows.append(("fleet: memory per 1,000 chargers per replica",
                     ", ".join("%.1f MB" % m for m in mem) +
                     " (RSS growth from none known to all %d)" % len(ids),
                     "each replica keeps every charger's last read"))
        raw.update(connect_s=connect_s, connections=connections, replica_mb_per_1000=mem,
                   broker_mb_per_1000=broker_mem)

        _say("fleet: cached reads through 1, 2, 3 replicas ...")
        closed_loop(replicas, ids, seconds=2)  # warm: code paths, pools
        scaling = {}
        for k in (1, 2, 3):
            runs, used = closed_loop(replicas[:k], ids)
            lat = [ms for run in runs for ms in run[0]]
            per = [len(run[0]) / CLOSED_S for run in runs]
            scaling[k] = {"per_replica": per, "total": sum(per), "p50": pct(lat, 50),
                          "p99": pct(lat, 99), "bad": sum(run[1] for run in runs),
                          "cpu_s": used, "per_cpu_s": sum(len(run[0]) for run in runs) /
                          max(sum(used), 1e-9)}
        for k in (1, 2, 3):
            s = scaling[k]
            rows.append(("fleet: cached reads, %d replica%s (closed loop, %d clients each)"
                         % (k, "s" if k > 1 else "", CLOSED_CONNECTIONS),
                         "%.0f reads/s (%s per replica), %.1f ms p50, %.1f ms p99, %.0f reads "
                         "per replica CPU-second%s" % (
                             s["total"], " / ".join("%.0f" % x for x in s["per_replica"]),
                             s["p50"], s["p99"], s["per_cpu_s"],
                             ", %d not cache" % s["bad"] if s["bad"] else ""),
                         "%.2fx the reads/s of 1 replica, %.2fx its reads per CPU-second (%d "
                         "cores, shared with the load and others)" % (
                             s["total"] / scaling[1]["total"],
                             s["per_cpu_s"] / scaling[1]["per_cpu_s"], os.cpu_count())
                         if k > 1 else "the reference for the next two rows"))
        lat, bad = asyncio.run(paced([r.port for r in replicas], ids, PACED_RATE, PACED_S))
        rows.append(("fleet: cached read at %d reads/s over %d replicas" % (PACED_RATE,
                                                                              REPLICAS),
                     "%.2f ms p50, %.2f ms p99 (%d reads%s)" % (
                         pct(lat, 50), pct(lat, 99), len(lat), ", %d not cache" % bad
                         if bad else ""), "target p99 <= 10 ms (cloud.md, one replica)"))
        raw.update(scaling=scaling, paced_ms=lat)

        _say("fleet: live reads, commands and webhooks ...")
        rtt = broker_rtt(broker.address, broker.address)
        probe = ids[len(ids) // 2]
        direct_read = direct(broker.address, probe, "read", {}, SAMPLES)
        live, command, hook_ms, not_live = [], [], [], 0
        keep = [KeepAlive(r.port) for r in replicas]  # as the MQTT client keeps its one
        for i in range(SAMPLES):
            time.sleep(random.random() * 0.01)
            t0 = time.perf_counter()
            status, body = keep[i % REPLICAS]("GET", "/ev-charger/%s?expedite=true" % probe)
            live.append((time.perf_counter() - t0) * 1000)
            not_live += status != 200 or body["data"]["metadata"]["source"] != "live"
        direct_command = direct(broker.address, probe, "commands",
                                {"action": {"command": "charge"}}, SAMPLES)
        for i in range(SAMPLES):
            device = random.choice(ids)
            action_id = "act_fleet_%d_%d" % (os.getpid(), i)
            time.sleep(random.random() * 0.01)
            t0 = time.perf_counter()
            status, _ = keep[i % REPLICAS]("POST", "/ev-charger/" + device,
                                           {"action": {"command": "charge"},
                                            "actionId": action_id})
            command.append((time.perf_counter() - t0) * 1000)
            deadline = time.monotonic() + 10
            while action_id not in hooks.done and time.monotonic() < deadline:
                time.sleep(0.001)
            if action_id in hooks.done:
                hook_ms.append((hooks.done[action_id] - t0) * 1000)
        agent_live = []
        for i in range(10):
            t0 = time.perf_counter()
            keep[i % REPLICAS]("GET", "/ev-charger/%s?expedite=true" % agents[0].id)
            agent_live.append((time.perf_counter() - t0) * 1000)
        commit = commit_ms(pg.url(db.rsplit("/", 1)[1]))
        med = statistics.median
        rows.append(("fleet: broker round trip (publish -> subscriber)",
                     "%.2f ms median, %.2f ms p99" % (med(rtt), pct(rtt, 99)),
                     "the reference for the next two rows"))
        rows.append(("fleet: live read through a replica (?expedite=true)",
                     "%.2f ms median, %.2f ms p99 (a real agent: %.2f ms median)%s; the same "
                     "read over MQTT %.2f ms median" % (
                         med(live), pct(live, 99), med(agent_live),
                         ", %d not live" % not_live if not_live else "", med(direct_read)),
                     "target <= %.2f ms: 2x the broker's request/reply plus the charger's "
                     "answer" % (med(direct_read) + 2 * med(rtt))))
        rows.append(("fleet: command through a replica -> 202",
                     "%.2f ms median, %.2f ms p99; the same command over MQTT %.2f ms median"
                     % (med(command), pct(command, 99), med(direct_command)),
                     "the charger's reply relayed and the action committed (a PostgreSQL "
                     "commit here: %.1f ms median, fsync on)" % med(commit)))
        rows.append(("fleet: command -> push.completed webhook received",
                     "%.0f ms median, %.0f ms p99 (%d of %d; the double completes after "
                     "50 ms)" % (med(hook_ms), pct(hook_ms, 99), len(hook_ms), SAMPLES),
                     "target p99 <= 1,050 ms (1 s plus the charger's own)"))
        raw.update(commit_ms=commit, rtt_ms=rtt, live_ms=live, agent_live_ms=agent_live,
                   direct_read_ms=direct_read, command_ms=command,
                   direct_command_ms=direct_command, webhook_ms=hook_ms)

        _say("fleet: failover: a replica killed under load ...")
        mix = ids + [a.id for a in agents]  # reads of the real agents too; commands: doubles
        load = Load(replicas, ids, mix, tag="replica").start()
        time.sleep(3)
        victim = replicas[-1]
        victim.kill()
        time.sleep(5)
        restart_s = victim.restart()
        time.sleep(3)
        load.stop()
        result = lost(load, hooks, replicas, WEBHOOK_TIMEOUT_S + 5 + 15)
        rows.append(("failover: one replica killed (SIGKILL), started again",
                     describe(load, *result) + "; back in %.1f s" % restart_s,
                     "cut: its open requests (a load balancer's 502); then the others answer"))
        raw["failover_replica"] = {"outcomes": load.outcomes, "missing": result[:2],
                                   "restart_s": restart_s}

        _say("fleet: failover: PostgreSQL crashed and started again under load ...")
        load = Load(replicas, ids, mix, tag="database").start()
        time.sleep(3)
        t0 = time.monotonic()
        pg.kill()
        time.sleep(3)
        pg.start()
        outage_s = time.monotonic() - t0
        time.sleep(5)
        load.stop()
        result = lost(load, hooks, replicas, 30)
        rows.append(("failover: PostgreSQL crashed (immediate shutdown), started again",
                     describe(load, *result) + "; database away %.1f s" % outage_s,
                     "cached reads go on; 503 DATABASE_UNAVAILABLE for what needs it"))
        raw["failover_database"] = {"outcomes": load.outcomes, "missing": result[:2],
                                    "outage_s": outage_s}
    finally:
        for a in agents:
            a.stop()
        if fleet:
            fleet.stop()
        for r in replicas:
            r.stop()
        hooks.close()
        broker.stop()


def cluster_half(state_dir, chargers, pg, rows, raw):
    """Three RabbitMQ nodes, `chargers` doubles over them, a real agent on the node that is
    killed (the others next in its list), three replicas each starting on another node: the
    broker failover."""
    why = rabbit.missing()
    if why:
        rows.append(("failover: one broker node killed", "not run: " + why, ""))
        return
    _say("fleet: a 3-node RabbitMQ cluster ...")
    cluster = rabbit.Cluster(3)
    hooks = Hooks()
    replicas, fleet, agents = [], None, []
    try:
        t0 = time.monotonic()
        cluster.start()
        cluster_s = time.monotonic() - t0
        a, b, c = cluster.nodes
        db = pg.create_db("cluster")
        lists = [",".join(n.address for n in order) for order in ((a, b, c), (b, c, a),
                                                                  (c, a, b))]
        replicas = [Replica(lst, db) for lst in lists]
        call(replicas[0].port, "POST", "/webhooks", {"url": hooks.url,
                                                     "events": ["push.completed"]})
        t0 = time.monotonic()
        fleet = Fleet(cluster.addresses, chargers)
        fleet.wait_ready(300)
        setup_s = time.monotonic() - t0
        # The real agent's broker list starts with C, the node that is killed.
        agents = [Agent(lists[2], os.path.join(state_dir, "agent-c"), "agent-c")]
        for r in replicas:
            deadline = time.monotonic() + 60
            while call(r.port, "GET", "/ev-charger/agent-c")[0] != 200:
                if time.monotonic() > deadline:
                    raise RuntimeError("the agent on node C was not seen")
                time.sleep(0.5)
        same, across = broker_rtt(a.address, a.address), broker_rtt(a.address, b.address)
        rows.append(("fleet: chargers on a 3-node RabbitMQ 3.10 cluster",
                     "%d doubles set up in %.1f s (%.0f MQTT sessions/s), 1 real agent; the "
                     "cluster started in %.0f s" % (chargers, setup_s, chargers / setup_s,
                                                   cluster_s),
                     "each subscription is a binding Mnesia replicates to every node"))
        rows.append(("fleet: broker round trip on the cluster",
                     "%.2f ms median on one node, %.2f ms node to node" % (
                         statistics.median(same), statistics.median(across)),
                     "Mosquitto's above, for comparison"))

        _say("fleet: failover: a broker node killed under load ...")
        load = Load(replicas, fleet.ids, fleet.ids + ["agent-c"], tag="node").start()
        time.sleep(3)
        killed = time.monotonic()
        c.kill()
        moved = None
        while time.monotonic() - killed < 30:
            health = call(replicas[2].port, "GET", "/health")[1]["data"]
            if health["broker"] and health["brokerAddress"] != c.address:
                moved = time.monotonic() - killed
                break
            time.sleep(0.1)
        agent_moved, slow_polls = None, 0
        while time.monotonic() - killed < AGENT_MOVE_S:
            try:  # a live read: answered within --live-wait (5 s), or it counts
                status, body = call(replicas[0].port, "GET", "/ev-charger/agent-c?expedite=true",
                                    timeout=REQUEST_BOUND_S)
            except OSError:
                slow_polls += 1
                continue
            if status == 200 and body["data"]["metadata"]["source"] == "live":
                agent_moved = time.monotonic() - killed
                break
            time.sleep(0.2)
        agent_write = call(replicas[0].port, "POST", "/ev-charger/agent-c",
                           {"action": {"command": "idle"}})
        # What the agent did meanwhile (its own words): which node it dialled and how each
        # dial ended, the nodes named by letter.
        uplink = agents[0].uplink_since(killed)
        for letter, node in zip("ABC", (a, b, c)):
            uplink = [line.replace(node.address, letter) for line in uplink]
        time.sleep(max(0, 10 - (time.monotonic() - killed)))
        down_s = time.monotonic() - killed
        t0 = time.monotonic()
        c.start()
        restart_s = time.monotonic() - t0
        time.sleep(3)
        load.stop()
        result = lost(load, hooks, replicas, 30)
        back = sorted(fleet.back_ms)
        rows.append(("failover: one broker node killed (SIGKILL), started again %.0f s later"
                     % down_s,
                     describe(load, *result) + "; the replica on it moved to the next node in "
                     "%s; its %d doubles back in %.1f s p50, %.1f s max; the real agent on it "
                     "(its broker list C, A, B) live through another node %s after the kill, "
                     "a write to it then: %d%s; node C took %.0f s to start again" % (
                         "%.1f s" % moved if moved is not None else "NOT within 30 s",
                         len(back), pct(back, 50) / 1000, (back[-1] if back else 0) / 1000,
                         "%.1f s" % agent_moved if agent_moved is not None else
                         "NOT within %d s" % AGENT_MOVE_S, agent_write[0],
                         " " + agent_write[1].get("error", {}).get("code", "")
                         if agent_write[0] >= 400 else "", restart_s) +
                     ("; %d of its reads unanswered within %g s" % (slow_polls, REQUEST_BOUND_S)
                      if slow_polls else "") +
                     ("; its uplink after the kill: " + ", ".join(uplink)
                      if agent_moved is None else ""),
                     "no will from a dead node: chargers move by their broker list (backoff "
                     "0.5-0.75 s, then the next node; docs/uplinks.md)"))
        raw["failover_node"] = {"outcomes": load.outcomes, "missing": result[:2],
                                "replica_moved_s": moved, "doubles_back_ms": back,
                                "agent_moved_s": agent_moved, "agent_uplink": uplink,
                                "setup_s": setup_s,
                                "rtt_same_ms": same, "rtt_across_ms": across}
    finally:
        for a in agents:
            a.stop()
        if fleet:
            fleet.stop()
        for r in replicas:
            r.stop()
        hooks.close()
        cluster.stop()


def run(state_dir, chargers=10000, cluster_chargers=600):
    """(rows, raw): rows are (figure, measured, compare against)."""
    rows, raw = [], {"load_before": load_average()}
    why = postgres.missing()
    if why:
        return [("fleet", "not run: " + why, "")], raw
    pg = postgres.Postgres().start()
    try:
        for half, n in ((scale_half, chargers), (cluster_half, cluster_chargers)):
            try:
                half(state_dir, n, pg, rows, raw)
            except Exception as e:  # the other half and the rows so far still count
                rows.append(("fleet: %s" % half.__name__.replace("_", " "),
                             "NOT FINISHED: %s: %s" % (type(e).__name__, e), ""))
                if not pg.proc:
                    pg.start()
    finally:
        pg.stop()
    raw["load_after"] = load_average()
    rows.append(("fleet: the machine's load average (others share it)",
                 "%.1f before, %.1f after" % (raw["load_before"], raw["load_after"]),
                 "%d cores" % os.cpu_count()))
    return rows, raw


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m tools.measure.fleet",
                                description=__doc__.split("\n")[0])
    p.add_argument("--chargers", type=int, default=10000)
    p.add_argument("--cluster-chargers", type=int, default=600)
    p.add_argument("--out", help="the raw figures as JSON")
    a = p.parse_args(argv)
    children.exit_on_hangup()
    tmp = tempfile.mkdtemp(prefix="bench-fleet-")
    children.adopt(tmp, lambda: shutil.rmtree(tmp, ignore_errors=True))
    rows, raw = run(tmp, a.chargers, a.cluster_chargers)
    w0 = max(len(r[0]) for r in rows)
    print("| %s | measured | compare against |" % "figure".ljust(w0))
    print("|%s|---|---|" % ("-" * (w0 + 2)))
    for r in rows:
        print("| %s | %s | %s |" % (r[0].ljust(w0), r[1], r[2]))
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"rows": rows, "raw": raw}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
