"""make bench: the charger's numbers against the physical limits (docs/performance.md).

Runs the simulated charger (agent under micropython) on a real broker and prints one table;
writes the figures as JSON to build/bench.json. This module only gathers the table: each
family of figures is measured by its own module, which also words its rows:
latency.py (timings and speeds), memory.py (heap and flash footprint, for each way the agent
runs here), meters.py (the Modbus meters' poll, their wiring's heap and the tick while they
are polled), wear.py (flash writes and wear), ocpp_heap.py (the OCPP uplink's heap), ota.py
(an update's verification, heap and flash wear), site_day.py (a site day) and cloud.py (the
cloud service); memory.py also the switch between one phase and three.
"""
import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile

from tools.bench import children
from tools.bench.broker import Broker
from tools.measure import (cloud, fleet, latency, memory, meters, ocpp_heap, ota, site_day,
                           wear)
from tools.paths import BUILD, ROOT, micropython


def machine():
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    versions = {}
    for build in ("wheel", "unix32"):
        try:
            exe, env = micropython(build)
            versions[build] = subprocess.run(exe + ["-c", "import sys; print(sys.version)"],
                                             env=env, capture_output=True,
                                             text=True).stdout.strip()
        except OSError:  # unix32 not built
            versions[build] = None
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "micropython": versions, "system": platform.platform()}


def main(argv=None):
    p = argparse.ArgumentParser(prog="make bench")
    p.add_argument("--samples", type=int, default=200)
    p.add_argument("--hours", type=float, default=24, help="virtual hours of the heap session")
    p.add_argument("--search-hours", type=float, default=1,
                   help="virtual hours of each session in the heap-size search")
    p.add_argument("--out", default=os.path.join(BUILD, "bench.json"))
    a = p.parse_args(argv)
    if not 1 <= a.samples <= 250:
        p.error("--samples must be 1 to 250 (the live latencies step 0.1 A down from 32 A)")
    tmp = tempfile.mkdtemp(prefix="bench-")
    children.adopt(tmp, lambda: shutil.rmtree(tmp, ignore_errors=True))  # gone at exit

    def sub(name):
        os.makedirs(os.path.join(tmp, name))
        return os.path.join(tmp, name)

    # Mosquitto with TCP_NODELAY where installed: amqtt's own Nagle delays add ~40 ms to
    # every reply and would be measured instead of the agent.
    broker = Broker(Broker.preferred()).start()
    try:
        print("bench: broker round trip ...", flush=True)
        rtt = latency.broker_round_trip(broker, a.samples)
        print("bench: live latencies ...", flush=True)
        cap_ms, limit_ms, ack_ms, done_ms = latency.live_latencies(broker, a.samples,
                                                                   sub("live"))
        print("bench: the live page's cost to the bench tick ...", flush=True)
        no_page, with_page, pushes = latency.page_cost(broker, sub("page"))
        print("bench: limit expiry ...", flush=True)
        expiry = latency.expiry_accuracy(20, sub("expiry"))
        print("bench: flash wear (NVS model) ...", flush=True)
        wear_rows = wear.table()
        print("bench: contactor opening ...", flush=True)
        unplug, c_to_b, mp_speed = latency.open_latencies(2 * a.samples, sub("open"))
        print("bench: flash writes ...", flush=True)
        writes, changes = wear.flash_writes(1000, sub("flash"))
        mem = memory.memory(broker, a.hours, a.search_hours)
        print("bench: OCPP uplink heap ...", flush=True)
        ocpp = ocpp_heap.measure(sub("ocpp"))
        print("bench: the cloud service (one replica, SQLite) ...", flush=True)
        cloud_rows, cloud_raw = cloud.run(broker, sub("cloud"), rtt)
        print("bench: OCPP uplink heap, 32-bit frozen (at 56K, size search) ...", flush=True)
        ocpp32 = ocpp_heap.measure_32(sub("ocpp32"))
    finally:
        broker.stop()
    cp_speed = latency.cpython_speed(sub("cpython"))
    print("bench: a site day (3 chargers, %d bench minutes) ..." % (site_day.DAY_MS // 60000),
          flush=True)
    site, site_rows, _ = site_day.run(quiet=True)
    print("bench: the cloud at scale (tools/measure/fleet.py: 10,000 chargers, 1-3 replicas, "
          "failover; a few minutes) ...", flush=True)
    fleet_rows, fleet_raw = fleet.run(sub("fleet"))
    print("bench: OTA manifest verification ...", flush=True)
    verify = ota.verify_cost()
    print("bench: a whole OTA update, 32-bit frozen; its flash wear ...", flush=True)
    update, update_wear = ota.update_cost(), ota.update_wear()
    ours, ocpp_code, theirs = memory.footprint()
    print("bench: Modbus meter poll (unix32) ...", flush=True)
    meter_poll = meters.poll_cost()
    print("bench: the control tick while the meters are polled (unix32) ...", flush=True)
    meter_tick = meters.tick_cost()
    print("bench: a switch between one phase and three (unix32) ...", flush=True)
    phase = memory.phase_switch_cost()
    rows = latency.rows(rtt, cap_ms, limit_ms, expiry, ack_ms, done_ms, unplug, c_to_b) + \
        memory.rows(mem, a.hours, a.search_hours) + [
            memory.tick_row(mem),
            wear.flash_writes_row(writes, changes),
            ocpp_heap.row(ocpp),
            ocpp_heap.row_32(ocpp32),
            memory.footprint_row(ours, ocpp_code, theirs),
        ] + memory.phase_rows(phase) + [
            latency.speed_row(mp_speed, cp_speed, mem["wheel"]["heap"]),
            latency.page_row(no_page, with_page, pushes),
            ota.row(verify),
            ota.update_row(update),
            ota.wear_row(update_wear),
        ] + meters.rows(meter_poll, meter_tick) + wear_rows + [
            ("site: " + r[0], r[1], r[2] + ("" if r[3] else ": MISSED")) for r in site_rows] + [
            (r[0], r[1], r[2] + ("" if r[3] else ": MISSED")) for r in cloud_rows] + fleet_rows
    info = machine()
    info["broker"] = broker.kind
    print("\nmachine: %s (%d cores), Python %s; micropython: wheel %s, unix32 %s; broker: %s"
          % (info["cpu"], info["cores"], info["python"], info["micropython"]["wheel"],
             info["micropython"]["unix32"], broker.kind))
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    print("| %s | %s | compare against |" % ("figure".ljust(w0), "measured".ljust(w1)))
    print("|%s|%s|---|" % ("-" * (w0 + 2), "-" * (w1 + 2)))
    for r in rows:
        print("| %s | %s | %s |" % (r[0].ljust(w0), r[1].ljust(w1), r[2]))
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump({"machine": info, "rows": rows, "raw": {
            "rtt_ms": rtt, "cap_ms": cap_ms, "limit_ms": limit_ms, "expiry_ms": expiry,
            "ack_ms": ack_ms, "done_ms": done_ms,
            "unplug_ms": unplug, "c_to_b_ms": c_to_b, "memory": mem, "ocpp": ocpp,
            "ocpp_unix32": ocpp32, "flash_writes": writes, "flash_changes": changes,
            "footprint_bytes": {"agent_and_board": ours, "ocpp": ocpp_code,
                                "micropython_lib": theirs}, "site_day": site,
            "cloud": cloud_raw, "ota_verify": verify,
            "ota_update": {str(k): v for k, v in update.items()},
            "ota_wear": update_wear, "meter_poll": meter_poll, "meter_tick": meter_tick,
            "phase_switch": phase, "fleet": fleet_raw}}, f, indent=1)
    print("\nwritten to %s" % os.path.relpath(a.out, ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
