"""make bench: the Modbus meters' cost (docs/meters.md, "Measured"), on make unix32's build
(the agent frozen, as on an ESP32 image), against the bench's pymodbus meters
(tools/bench/meter_peer.py): a poll's heap, garbage and time (probes/meter_probe.py), and
the control tick's timing while the poll thread reads an EV and a mains meter, beside the
heap their wiring takes (probes/meter_tick_probe.py).
"""
import os
import tempfile

from tools.bench.bench import METER_ADDRESSES
from tools.bench.meter_peer import MeterPeer
from tools.measure.memory import probe

TICK_PERIOD_MS = 250  # the shortest period config allows: the bus busiest, the worst case
TICK_TURN_S = 5
TICK_TURNS = 6  # alternating without and with the poll thread: the machine's drift on both


def poll_cost():
    """One SDM630 on the bus (floats: its energy is the one value that costs a big
    integer): meter_probe.py's figures, or None."""
    peer = MeterPeer("SDM630", 11).start()
    try:
        peer.set([160, 158, 161], 11040, 1234500)
        return probe("unix32", "meter_probe.py", str(peer.port), "SDM630", "11", "100")
    finally:
        peer.close()


def tick_cost(build="unix32", turn_s=TICK_TURN_S, turns=TICK_TURNS):
    """meter_tick_probe.py's figures with an EV and a mains meter (SDM630s at the bench's
    addresses) on one bus, at an ESP32's 56K heap, or None."""
    peers = [MeterPeer("SDM630", METER_ADDRESSES[role]).start() for role in ("ev", "mains")]
    try:
        for p in peers:
            p.set([160, 158, 161], 11040, 1234500)
        with tempfile.TemporaryDirectory(prefix="bench-meters-") as state:
            for name in ("first", "plain", "metered"):
                os.makedirs(os.path.join(state, name))
            return probe(build, "meter_tick_probe.py", ",".join(str(p.port) for p in peers),
                         str(TICK_PERIOD_MS), str(turn_s), str(turns), state, heapsize="56K",
                         timeout=120)
    finally:
        for p in peers:
            p.close()


def rows(poll, tick):
    def ms(figures, key):
        return "%.2f" % (figures[key] / 1000) if figures else "-"

    def timing(f):
        return "%s / %s / %s ms late (p50 / p99 / max)" % (
            ms(f["late"], "p50_us"), ms(f["late"], "p99_us"), ms(f["late"], "max_us"))

    return [
        ("meters: Modbus poll, 32-bit v1.28.0, frozen (SDM630, 3 reads)",
         "%.1f KB imported, %.1f KB a bus and its meter; %d B garbage per poll; %.1f ms per "
         "poll on the bench (%.2f ms of its own work)" % (
             poll["imported"] / 1024, poll["built"] / 1024, poll["poll_garbage"],
             poll["poll_ms"], poll["poll_cpu_ms"]) if poll else "FAILED",
         "off the control tick; 9600 baud adds ~70 ms on the wire (docs/meters.md)"),
        ("meters: heap of the wiring, 32-bit v1.28.0, frozen (an EV and a mains meter)",
         "%.1f KB imported (meter_watch, site_local and the core), %.1f KB wired (the bus, "
         "two meters, the watch, the local site)" % (tick["imported"] / 1024,
                                                     tick["wired"] / 1024)
         if tick else "FAILED", "ESP32 heap 56K at start; the frozen agent's target <= 24 KB"),
        ("meters: control tick while polled, 32-bit frozen (2 meters every %d ms)"
         % TICK_PERIOD_MS,
         "without polls %s; with %s; the %d ticks during a poll %s; tick %.0f / %.0f us "
         "(without / with, mean)" % (
             timing(tick["without"]), timing(tick["with"]),
             tick["during_poll"]["late"]["ticks"], timing(tick["during_poll"]),
             tick["without"]["tick"]["mean_us"], tick["with"]["tick"]["mean_us"])
         if tick and tick["during_poll"]["late"] else "FAILED",
         "unchanged (the unix port has no GIL; on an ESP32 a request's flush holds it "
         "~9 ms at 9600 baud: docs/meters.md)"),
    ]
