"""make bench: the agent's memory and flash footprint (docs/performance.md), for each way the
agent runs here (tools/paths.py BUILDS): the heap its imports take, module by module; its live
heap after wiring and connecting and at the peak of a long session; the smallest -X heapsize
a session passes at; its allocations per control tick; and the .mpy bytes make deploy puts on
an ESP32. On the ESP32's own model (32-bit, frozen) the long session runs with each set of
fronts (FRONTS: MQTT alone, MQTT and HTTP, HTTP alone), its peak against that one's target.
The figures come from the on-device probes (tools/measure/probes/) run under each
micropython; rows() and its neighbours turn them into make bench's table rows.

    python -m tools.measure.memory [--hours 24] [--search-hours 1] [--builds unix32]

runs this part of make bench alone and prints its rows.
"""
import argparse
import glob
import json
import os
import re
import subprocess
import sys
import tempfile

from tools.bench.broker import Broker, free_port
from tools.device import manifest, unix32
from tools.device.deploy import build_tree, sources as deploy_sources
from tools.paths import AGENT_MANIFEST, BOARDS, MPY_LIB, ROOT, micropython

# (build, what it is, what to compare its peak and its smallest heap with): the rows of
# the memory figures. The wheel cannot have the agent frozen (it is a prebuilt binary).
MEMORY_BUILDS = (
    ("wheel", "64-bit wheel, .mpy in heap",
     "64-bit objects (twice an ESP32's) and the bytecode in the heap", "the old figures"),
    ("unix32-mpy", "32-bit v1.28.0, .mpy in heap",
     "an ESP32 running make deploy's .mpy", "an ESP32 heap starts at 56K"),
    ("unix32", "32-bit v1.28.0, frozen",
     "an ESP32 image with the agent frozen: target <= 24 KB", "target: passes at 40K"))


HEAP_SIZES = list(range(16, 129, 4))  # KB: the smallest passing heap is searched in these


TARGET_HEAP = ("unix32", "40K")  # the long session runs again at this heap, no growth

# The long session's fronts on the ESP32's model (TARGET_HEAP's build), each with its target
# for the live peak in KB (spec/http.md, "Memory"): (the probe's FRONTS, what it is, target).
FRONTS = (("mqtt", "MQTT alone", 24), ("mqtt+http", "MQTT and HTTP", 28),
          ("http", "HTTP alone (no broker)", 24))


def module_names():
    """The modules the simulated agent imports (ssl only with TLS), each after the modules
    it imports, so that the import probe charges each module with its own cost."""
    entries = manifest.files(AGENT_MANIFEST) + [
        manifest.Entry(os.path.join(BOARDS, "sim", n + ".py"), n + ".py", None, None)
        for n in ("sim_board", "sim_link")]
    deps = {}
    for e in entries:
        name = os.path.splitext(e.target)[0].replace("/__init__", "").replace("/", ".")
        with open(e.source) as f:
            deps[name] = set(re.findall(r"^\s*(?:import|from)\s+([\w.]+)", f.read(), re.M))
    deps.pop("ssl")
    order = []
    while len(order) < len(deps):
        ready = sorted(n for n in deps if n not in order and deps[n] & set(deps) <= set(order))
        order += ready or sorted(set(deps) - set(order))[:1]  # a cycle: break it anywhere
    return order


def probe(build, script, *args, heapsize="256K", timeout=900):
    exe, env = micropython(build)
    out = subprocess.run(exe + ["-X", "heapsize=" + heapsize,
                                os.path.join(ROOT, "tools", "measure", "probes", script), *args],
                         env=env, capture_output=True, text=True, timeout=timeout)
    if out.returncode:
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def session(build, broker, size, hours, log=None, fronts="mqtt"):
    """The heap probe's figures if its session passed (no MemoryError, one MQTT connection
    throughout, every HTTP request answered 200, the last cap applied), else None; `log` gets
    (size, why) for every session. `fronts`: the probe's FRONTS."""
    exe, env = micropython(build)
    with tempfile.TemporaryDirectory(prefix="bench-heap-") as state:
        out = subprocess.run(exe + ["-X", "heapsize=" + size, os.path.join(
            ROOT, "tools", "measure", "probes", "heap_probe.py"),
            broker.address if broker else "-", str(hours), state, fronts, str(free_port())],
            env=env, capture_output=True, text=True, timeout=1800)
    lines = (out.stdout + out.stderr).strip().splitlines()
    r = json.loads(lines[-1]) if out.returncode == 0 and lines else None
    if r is not None:
        # The live figures count the interpreter and the agent, not the probe's bytecode
        # and its HTTP client's class (2.7 KB on the 32-bit build): a board runs a frozen
        # main, not a script in RAM. The probe's own part: its live heap before its first
        # import less a one-line script's.
        bare = subprocess.run(exe + ["-X", "heapsize=" + size, "-c",
                                     "import gc;gc.collect();print(gc.mem_alloc())"],
                              env=env, capture_output=True, text=True, timeout=60)
        r["probe_code"] = r["script"] - int(bare.stdout)
        for figures in (r, r["stages"]):
            for k in ("peak_live", "imported", "wired", "connected"):
                if k in figures:
                    figures[k] -= r["probe_code"]
    if r is None:
        why = lines[-1] if lines else "exit %d" % out.returncode  # e.g. MemoryError
    elif r["connects"] not in (None, 1):
        why = "%d MQTT connections" % r["connects"]
    elif r["http_answers"] is not None and set(r["http_answers"]) != {"200"}:
        why = "HTTP answers %s" % r["http_answers"]
    elif r["final_cap_w"] != r["expected_cap_w"]:
        why = "last cap %d W, not %d W" % (r["final_cap_w"], r["expected_cap_w"])
    else:
        why = "passed"
    if log is not None:
        log.append((size, fronts, why))
    return r if why == "passed" else None


def heap(build, broker, hours, search_hours, log):
    """The long session at 256K, and the smallest -X heapsize (KB) that passes shorter ones."""
    full = session(build, broker, "256K", hours, log)
    lo, hi = 0, len(HEAP_SIZES) - 1
    while lo < hi:  # smallest passing size, by bisection
        mid = (lo + hi) // 2
        if session(build, broker, "%dK" % HEAP_SIZES[mid], search_hours, log):
            hi = mid
        else:
            lo = mid + 1
    smallest = (HEAP_SIZES[lo] if session(build, broker, "%dK" % HEAP_SIZES[lo], search_hours,
                                          log) else None)
    return full, smallest


def memory(broker, hours, search_hours, builds=None):
    """{build: figures} for MEMORY_BUILDS (those named in `builds`, or all), or
    {build: {"skipped": why}}."""
    out = {}
    for build, what, _, _ in MEMORY_BUILDS:
        if builds and build not in builds:
            continue
        if build != "wheel":
            try:
                unix32.build()
            except (unix32.Unavailable, unix32.BuildError) as e:
                out[build] = {"skipped": str(e)}
                continue
        print("bench: heap and allocations, %s (%g h session, size search) ..." % (what, hours),
              flush=True)
        alloc = probe(build, "alloc_probe.py", "-", "5000", heapsize="256K")
        imports = probe(build, "import_probe.py", *module_names())
        log = []  # every heap session: (size, fronts, "passed" or why not)
        full, smallest = heap(build, broker, hours, search_hours, log)
        out[build] = {"alloc": alloc, "imports": imports, "heap": full,
                      "smallest_heap_k": smallest, "sessions": log}
        if build == TARGET_HEAP[0]:
            out[build]["at_target"] = session(build, broker, TARGET_HEAP[1], hours, log)
            print("bench: heap, %s: the %g h session with each front ..." % (what, hours),
                  flush=True)
            out[build]["fronts"] = {f: full if f == "mqtt" else session(
                build, broker, "256K", hours, log, f) for f, _, _ in FRONTS}
    return out


def rows(mem, hours, search_hours):
    rows = []
    for build, what, live_vs, smallest_vs in MEMORY_BUILDS:
        if build not in mem:
            continue
        m = mem[build]
        if "skipped" in m:
            rows.append(("heap and allocations, %s" % what, "skipped: " + m["skipped"], ""))
            continue
        full, smallest = m["heap"], m["smallest_heap_k"]
        steady = [r for r in m["alloc"] if r["state"] != "calibration"] if m["alloc"] else []
        top = sorted(m["imports"] or [], key=lambda r: -r[1])[:3]
        rows += [
            ("heap, %s: importing the agent" % what,
             "%.1f KB (largest: %s)" % (sum(r[1] for r in m["imports"]) / 1024, ", ".join(
                 "%s %.1f" % ("+".join(r[2]), r[1] / 1024) for r in top))
             if m["imports"] else "FAILED", "modules and what they loaded, in KB"),
            ("heap, %s: live after imports / wiring / connect" % what,
             "%.1f / %.1f / %.1f KB" % tuple(full["stages"][k] / 1024 for k in (
                 "imported", "wired", "connected")) if full else "FAILED",
             "the code, the agent's objects, the MQTT session (not the probe's bytecode)"),
            ("heap, %s: peak live, %g h session" % (what, hours),
             "%.1f KB live after collect (%.1f KB sampled with garbage)" % (
                 full["peak_live"] / 1024, full["peak_alloc"] / 1024) if full else "FAILED",
             live_vs),
            ("heap, %s: smallest -X heapsize passing" % what,
             "%sK (%g h sessions)" % (smallest, search_hours) if smallest
             else "none up to %dK" % HEAP_SIZES[-1], smallest_vs),
        ] + ([("heap, %s: %g h session at -X heapsize=%s" % (what, hours, TARGET_HEAP[1]),
               "passes, %.1f KB live peak" % (m["at_target"]["peak_live"] / 1024)
               if m["at_target"] else "FAILED",
               "the target heap, no growth")] if "at_target" in m else []) + [
            ("heap, %s: peak live, %g h session, %s" % (what, hours, name),
             "%.1f KB live after collect (%.1f KB sampled with garbage; %.1f KB connected)" % (
                 r["peak_live"] / 1024, r["peak_alloc"] / 1024,
                 r["stages"]["connected"] / 1024) if r else "FAILED",
             "target <= %d KB: %s" % (target, "met" if r and r["peak_live"] <= target * 1024
                                      else "MISSED"))
            for fronts, name, target in FRONTS if fronts in m.get("fronts", ())
            for r in (m["fronts"][fronts],)] + [
            ("allocations per control tick, %s" % what,
             "%g bytes (%d bytes over %d ticks in %d states)" % (
                 sum(r["bytes"] for r in steady) / (steady[0]["ticks"] * len(steady)),
                 sum(r["bytes"] for r in steady), steady[0]["ticks"], len(steady))
             if steady else "FAILED", "target 0"),
        ]
    return rows


def tick_row(mem):
    """The control tick's cost on the wheel's micropython, from its allocation probe."""
    steady = [r for r in mem["wheel"]["alloc"] if r["state"] != "calibration"]
    return ("control tick cost (unix port)", "%.1f us mean (worst state %.1f us)" % (
        sum(r["us_per_tick"] for r in steady) / len(steady),
        max(r["us_per_tick"] for r in steady)), "tick period 10 000 us")


OCPP_MODULES = ("ocpp_", "ws_client", "isotime")  # the OCPP uplink's modules, by name


def footprint():
    """(agent and board, of which the OCPP uplink, micropython-lib) bytes of .mpy in the
    ESP32 deploy tree."""
    libs = {os.path.splitext(e.target)[0] + ".mpy" for e in deploy_sources("esp32")
            if e.source.startswith(MPY_LIB)}
    ours = ocpp = theirs = 0
    with tempfile.TemporaryDirectory() as tmp:
        build_tree(tmp, "esp32", None, "xtensawin")
        lib = os.path.join(tmp, "lib")
        for f in glob.glob(os.path.join(lib, "**", "*.mpy"), recursive=True):
            size = os.path.getsize(f)
            if os.path.relpath(f, lib) in libs:
                theirs += size
            else:
                ours += size
                ocpp += size if os.path.basename(f).startswith(OCPP_MODULES) else 0
    return ours, ocpp, theirs


def footprint_row(ours, ocpp_code, theirs):
    return ("flash footprint (.mpy of make deploy)", "%.1f KB agent and board (%.1f KB without "
            "the OCPP uplink's %.1f KB), %.1f KB micropython-lib" % (
                ours / 1024, (ours - ocpp_code) / 1024, ocpp_code / 1024, theirs / 1024),
            "target < 64 KB, set before OCPP (docs/performance.md); the v1.28.0 image freezes "
            "the same micropython-lib (imported first)")


def phase_switch_cost():
    """The switch between one phase and three on make unix32's build (probes/phase_probe.py):
    None if the probe failed."""
    return probe("unix32", "phase_probe.py")


def phase_rows(p):
    if not p:
        return [("phases: a switch, 32-bit v1.28.0, frozen", "FAILED", "")]
    s, q = p["switch"], p["steady"]
    return [
        ("phases: heap of a second contactor, 32-bit v1.28.0, frozen",
         "%+d B live (%.1f KB an agent with it, %.1f KB without)" % (
             p["switching"] - p["plain"], p["switching"] / 1024, p["plain"] / 1024),
         "the feature's objects: the module is frozen"),
        ("phases: control tick through a switch, 32-bit v1.28.0, frozen",
         "%d B over %d ticks (%.1f s: pause, settle, move, resume); median %d us, p99 %d us"
         " (charging: %d B, median %d us, p99 %d us)" % (
             s["bytes"], s["ticks"], s["ticks"] / 100, s["p50_us"], s["p99_us"],
             q["bytes"], q["p50_us"], q["p99_us"]),
         "0 B; the tick's time unchanged by a switch (period 10 000 us)"),
    ]


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m tools.measure.memory",
                                description="make bench's memory figures alone")
    p.add_argument("--hours", type=float, default=24, help="virtual hours of the long session")
    p.add_argument("--search-hours", type=float, default=1,
                   help="virtual hours of each session in the heap-size search")
    p.add_argument("--builds", nargs="+", choices=[b[0] for b in MEMORY_BUILDS],
                   help="only these builds (default: all)")
    a = p.parse_args(argv)
    broker = Broker(Broker.preferred()).start()
    try:
        mem = memory(broker, a.hours, a.search_hours, a.builds)
    finally:
        broker.stop()
    for r in rows(mem, a.hours, a.search_hours):
        print("| %s | %s | %s |" % r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
