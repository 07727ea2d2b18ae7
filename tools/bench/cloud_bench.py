"""make sim's cloud: the cloud service (tools/cloud, docs/cloud.md) beside the simulated
chargers, on the bench's broker and a SQLite file in the state directory.

    make sim ARGS="--cloud-port 8080 --api-key KEY [--chargers 3 --site-fuse 25]"

It starts once every charger's first state is on the broker, so the service meets them the
way it meets a fleet after a restart: by their retained reports, of unknown age (the first
read of each goes live). A thread of the launcher starts it and prints its address and key;
it is stopped with the launcher.
"""
import os
import subprocess
import sys
import threading
import time
import urllib.request

import paho.mqtt.client as mqtt

from tools.bench import children
from tools.bench.broker import free_port
from tools.cloud import keys
from tools.paths import ROOT


def add_arguments(p):
    g = p.add_argument_group("the cloud service beside the bench (docs/cloud.md)")
    g.add_argument("--cloud-port", type=int, metavar="N",
                   help="serve the cloud API on 127.0.0.1:N (0: a free port)")
    g.add_argument("--api-key", metavar="KEY", help="its API key (default: a new one, printed)")


def check(p, a):
    if a.api_key and keys.check_own(a.api_key):
        p.error("--api-key: " + keys.check_own(a.api_key))
    if a.cloud_port is not None and not 0 <= a.cloud_port <= 65535:
        p.error("--cloud-port must be 0-65535")


def wanted(a):
    return a.cloud_port is not None or a.api_key is not None


class CloudBench:
    def __init__(self, a, address, device_ids, say):
        self.a, self.address, self.ids, self.say = a, address, list(device_ids), say
        self.port = a.cloud_port or free_port()
        self.key = a.api_key or keys.make()
        self.proc = None
        self.stopped = threading.Event()
        threading.Thread(target=self._start, daemon=True).start()

    def _states_retained(self, timeout_s=30):
        seen = set()
        done = threading.Event()

        def on_message(client, userdata, msg):
            seen.add(msg.topic.split("/")[-2])
            if seen >= set(self.ids):
                done.set()

        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        c.on_message = on_message
        c.on_connect = lambda client, *_: client.subscribe("%s/+/state" % self.a.prefix)
        if self.a.username:
            c.username_pw_set(self.a.username, self.a.password)
        host, _, port = self.address.rpartition(":")
        c.connect(host, int(port))
        c.loop_start()
        done.wait(timeout_s)
        c.disconnect()
        c.loop_stop()

    def _start(self):
        self._states_retained()
        if self.stopped.is_set():
            return
        a = self.a
        cmd = [sys.executable, "-m", "tools.cloud", "serve", "--broker", self.address,
               "--db", os.path.join(os.path.abspath(a.state_dir), "cloud.db"),
               "--port", str(self.port), "--api-key", self.key, "--prefix", a.prefix,
               "--client-id", "evse-cloud-sim-%d" % self.port]
        for flag, value in (("--ca", a.ca), ("--username", a.username),
                            ("--password", a.password)):
            if value and not a.agent_broker:
                cmd += [flag, value]
        log = open(os.path.join(a.state_dir, "cloud.log"), "ab")
        # Its own session, as the broker: Ctrl-C reaches the launcher, which stops it.
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        log.close()
        children.adopt(self, self.stop)
        url = "http://127.0.0.1:%d" % self.port
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                urllib.request.urlopen(url + "/health", timeout=1).read()
                self.say("sim: cloud %s/ev-charger (key %s; log in %s)\n"
                         "  curl -H 'Authorization: Bearer %s' %s/ev-charger/%s" % (
                             url, self.key, os.path.join(a.state_dir, "cloud.log"), self.key,
                             url, self.ids[0]))
                return
            except OSError:
                time.sleep(0.2)
        self.say("sim: the cloud service did not start: see %s"
                 % os.path.join(a.state_dir, "cloud.log"))

    def stop(self):
        self.stopped.set()
        if self.proc:
            children.interrupt(self.proc)
        children.release(self)
