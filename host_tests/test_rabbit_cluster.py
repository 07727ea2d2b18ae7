"""The cloud on a clustered broker (issue 26, items 3 and 5; docs/deployment.md): RabbitMQ
3.10's MQTT plugin, three nodes on this machine (tools/bench/rabbit.py), skipped saying what
is missing where they cannot start.

First what the cluster does with retained messages, last wills, shared subscriptions and
QoS 1 sessions across nodes (the facts docs/deployment.md builds on), then the cloud on it:
two replicas on different nodes over PostgreSQL, light doubles on every node, and the real
agent (make sim's launcher, micropython) on ONE node, the one that dies.

The agent is given all three nodes, the one that dies first (its `broker` list,
docs/uplinks.md "Several brokers"): it is back through another node before its own is
started again.
"""
import json
import os
import time

import httpx
import paho.mqtt.client as mqtt

from cloud_kit import Receiver
from e2e import launch, stop, wait_for
from scale_kit import Brokers, Doubles, Replica

WAIT = ["--live-wait", "2", "--write-wait", "3", "--expedite-ttl", "1", "--retry-first", "0.3",
        "--webhook-timeout", "2"]
AGENT = "agent-c"


class Eyes:
    """A plain MQTT client on one node: what a subscriber there sees."""

    def __init__(self, node, client_id, topics=(), clean=True, will=None):
        self.got = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  clean_session=clean)
        self.client.on_message = lambda c, u, m: self.got.append(
            (m.topic, m.payload, m.retain))
        self.client.on_connect = lambda c, *a: [c.subscribe(t, 1) for t in topics]
        if will:
            self.client.will_set(will, b"offline", qos=1, retain=True)
        host, port = node.address.rsplit(":", 1)
        self.client.connect(host, int(port), keepalive=10)
        self.client.loop_start()
        wait_for(self.client.is_connected, 10)
        time.sleep(0.3)  # SUBACK

    def payloads(self, topic):
        return [(p, r) for t, p, r in self.got if t == topic]

    def vanish(self):
        """The client dies: its socket closes without a DISCONNECT (the will goes out)."""
        self.client.loop_stop()
        self.client.socket().close()

    def close(self):
        self.client.loop_stop()
        self.client.disconnect()


def test_retained_messages_stay_on_their_node_and_wills_go_live_everywhere(cluster):
    a, b = cluster.nodes[0], cluster.nodes[1]
    pub = Eyes(a, "ret-pub")
    pub.client.publish("probe/retained", b"r1", qos=1, retain=True).wait_for_publish(5)
    on_a, on_b = Eyes(a, "ret-a", ["probe/retained"]), Eyes(b, "ret-b", ["probe/retained"])
    wild_a = Eyes(a, "ret-wild-a", ["probe/+"])
    time.sleep(1)
    assert on_a.payloads("probe/retained") == [(b"r1", True)]
    assert on_b.payloads("probe/retained") == []  # 3.x: the retained store is per node
    assert wild_a.got == []  # and a filter with a wildcard gets no retained message at all
    live_b = Eyes(b, "will-b", ["probe/will"])
    dying = Eyes(a, "will-a", will="probe/will")
    dying.vanish()
    wait_for(lambda: live_b.payloads("probe/will"), 10)
    assert live_b.payloads("probe/will") == [(b"offline", False)]  # routed live to B
    late_a, late_b = Eyes(a, "late-a", ["probe/will"]), Eyes(b, "late-b", ["probe/will"])
    time.sleep(1)
    assert late_a.payloads("probe/will") == [(b"offline", True)]
    assert late_b.payloads("probe/will") == []  # its retained copy is on A only
    first, second = Eyes(b, "share-1", ["$share/g/probe/shared"]), \
        Eyes(cluster.nodes[2], "share-2", ["$share/g/probe/shared"])
    for i in range(4):
        pub.client.publish("probe/shared", b"%d" % i, qos=1).wait_for_publish(5)
    time.sleep(1)
    assert first.got == second.got == []  # no shared subscriptions in 3.10
    for e in (pub, on_a, on_b, wild_a, live_b, late_a, late_b, first, second):
        e.close()


def status(replica, path, body=None):
    with replica.client() as api:
        r = api.post(path, json=body) if body is not None else api.get(path)
    return r.status_code, r.json()


def accepted(replica, device_id, action_id, timeout_s=15):
    """POST a command until the charger acknowledges it (202): a double may be between
    nodes. The same actionId each time, so a retry is the same action."""
    body = {"action": {"command": "charge"}, "actionId": action_id}
    wait_for(lambda: status(replica, "/ev-charger/" + device_id, body)[0] == 202, timeout_s)
    return action_id


class Launched:
    """make sim's launcher (the agent under micropython) as a process to stop."""

    def __init__(self, broker, state_dir, *extra):
        self.proc = launch(broker, state_dir, *extra)

    def stop(self):
        stop(self.proc)


def test_a_node_dies_under_the_cloud(cluster, pg_url, tmp_path, mpy_dir):
    a, b, c = cluster.nodes
    receiver = Receiver()
    order = lambda *nodes: Brokers(",".join(n.address for n in nodes))  # noqa: E731
    r1 = Replica(order(a, b, c), pg_url, tmp_path, *WAIT)
    r2 = Replica(order(c, a, b), pg_url, tmp_path, *WAIT)
    started = []
    try:
        for r in (r1, r2):
            started.append(r.start())
        with r1.client() as api:
            hook = api.post("/webhooks", json={"url": receiver.url,
                                               "events": ["push.completed"]}).json()["data"]
        receiver.secret = hook["secret"]
        fleet = Doubles(cluster.addresses, 6, heartbeat_s=2, id_format="node-%d").wait_ready()
        started.append(fleet)
        started.append(Launched(order(c, a, b), tmp_path / "agent", "--device-id", AGENT,
                                "--no-page"))
        for r in (r1, r2):
            for d in fleet.ids + [AGENT]:
                wait_for(lambda: status(r, "/ev-charger/" + d)[0] == 200, 60)
        assert status(r1, "/ev-charger/%s?expedite=true" % AGENT)[1]["data"]["metadata"][
            "source"] in ("live", "cache")
        session = Eyes(c, "qos1-session", ["probe/q1"], clean=False)
        session.close()  # away; its quorum queue keeps what comes
        watcher = Eyes(a, "watcher", ["ev-charger/%s/availability" % AGENT])
        pub = Eyes(a, "q1-pub")
        pub.client.publish("probe/q1", b"before", qos=1).wait_for_publish(5)

        c.kill()
        killed = time.monotonic()
        pub.client.publish("probe/q1", b"after", qos=1).wait_for_publish(5)
        # The replica on C moves to the next node of its list.
        wait_for(lambda: httpx.get(r2.url + "/health").json()["data"]["brokerAddress"] !=
                 c.address and httpx.get(r2.url + "/health").json()["data"]["broker"], 20)
        moved_s = time.monotonic() - killed
        # The doubles of C move too (the agent's backoff, the next node); acknowledged
        # commands to every double, through both replicas, complete and are delivered.
        wait_for(lambda: fleet.stats["ready"] == 6 and fleet.back_ms, 20)
        acked = [accepted((r1, r2)[i % 2], d, "act_node_%d" % i)
                 for i, d in enumerate(fleet.ids * 2)]
        # The agent's node is gone and no will says so (the node that held it is dead); the
        # agent moves to the next node of its list, after its backoff, and answers again.
        wait_for(lambda: status(r1, "/ev-charger/%s?expedite=true" % AGENT)[1]["data"][
            "metadata"]["source"] == "live", 30)
        agent_moved_s = time.monotonic() - killed
        assert b"offline" not in [p for p, _ in watcher.payloads(
            "ev-charger/%s/availability" % AGENT)]
        # A QoS 1 session whose queue lived on C resumes on A with everything in it.
        session = Eyes(a, "qos1-session", clean=False)
        wait_for(lambda: len(session.payloads("probe/q1")) == 2, 10)
        assert [p for p, _ in session.payloads("probe/q1")] == [b"before", b"after"]

        c.start()
        wait_for(lambda: len({e["data"]["actionId"] for e in receiver.accepted}) ==
                 len(acked), 20)
        for i, action_id in enumerate(acked):  # read through the other replica
            wait_for(lambda: status((r2, r1)[i % 2], "/actions/" + action_id)[1].get(
                "data", {}).get("state") == "completed", 10)
        with open(os.path.join(str(tmp_path), "failover.json"), "w") as f:
            json.dump({"replica_moved_s": moved_s, "doubles_back_ms": fleet.back_ms,
                       "agent_moved_s": agent_moved_s}, f)
        assert moved_s < 10 and max(fleet.back_ms) < 10000
        for e in (session, watcher, pub):
            e.close()
    finally:
        for thing in reversed(started):
            thing.stop()
        receiver.close()
        if not c.running:
            c.start()
