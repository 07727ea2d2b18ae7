# The Modbus meter poll's cost under micropython (docs/meters.md, "Measured"): the heap its
# modules take when imported, the heap a bus and one meter take when built, the garbage one
# poll leaves, the time of one poll against the bench's meter (tools/bench/meter_peer.py at
# TCP_PORT, holding MODEL at ADDRESS) and of its own work (the replies replayed, no waits).
# Run by `make bench` (tools/measure/perf.py).
#   micropython meter_probe.py TCP_PORT MODEL ADDRESS [POLLS]
# Prints one JSON line.
import gc
import json
import sys
import time

tcp_port, model, address = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
polls = int(sys.argv[4]) if len(sys.argv) > 4 else 200
import control  # noqa: F401  the agent has it loaded already; not the meters' cost
import nap  # noqa: F401
gc.collect()
base = gc.mem_alloc()
import modbus_rtu
import meter_poll
gc.collect()
imported = gc.mem_alloc() - base
from sim_serial import ReplayPort, SimPin, SocketPort
gc.collect()
base = gc.mem_alloc()
port = SocketPort(tcp_port, 9600, SimPin())
gc.collect()
port_bytes = gc.mem_alloc() - base
master = modbus_rtu.Master(port)
meter = meter_poll.Meter(model, address)
meter.poll(master, 0)  # the first poll makes each read's view of the receive buffer, once
gc.collect()
built = gc.mem_alloc() - base - port_bytes


frames = []
real_read = master.read


def recording(address, function, start, count):
    outcome = real_read(address, function, start, count)
    frames.append(bytes(master.rx[:5 + 2 * count]))
    return outcome


master.read = recording
meter.poll(master, 0)
master.read = real_read


def garbage(m, n):
    gc.collect()
    gc.disable()
    before = gc.mem_alloc()
    t0 = time.ticks_us()
    for i in range(n):
        meter.poll(m, i)
    us = time.ticks_diff(time.ticks_us(), t0)
    grown = gc.mem_alloc() - before
    gc.enable()
    return grown / n, us / n / 1000


# The same replies again, through a port that allocates nothing (the bench's socket port
# allocates in select and memoryview): what master and meter alone allocate.
replay_master = modbus_rtu.Master(ReplayPort(frames))
replay_master._gap_ms = 0  # no t3.5 waits either: the poll's own work alone
meter.poll(replay_master, 0)
own_bytes, cpu_ms = garbage(replay_master, polls)
bench_bytes, bench_ms = garbage(master, polls)
print(json.dumps({"model": model, "reads": len(frames), "imported": imported,
                  "built": built, "port": port_bytes, "poll_garbage": own_bytes,
                  "poll_garbage_with_port": bench_bytes, "poll_ms": bench_ms,
                  "poll_cpu_ms": cpu_ms, "counts": list(meter.counts),
                  "reply_bytes": sum(len(f) for f in frames)}))
