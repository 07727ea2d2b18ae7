# Modbus meters on the board's RS485 bus (docs/meters.md). A Meter is one meter: its
# model's read plan, and the integers the control tick reads from it (phase currents in dA,
# power in W, energy in Wh, the time of the reading), written by the poll thread alone and
# read by the tick without a lock and without allocation, as control's attributes are. A
# Poller is the poll thread of one bus: it reads each of its meters at a steady period, off
# the control tick (a read takes tens of milliseconds). Nothing about the line is raised:
# every transaction's outcome is counted in the meter's counters.
from array import array
from micropython import const
from control import elapsed
import meter_models as models
import modbus_rtu as rtu
from nap import nap

PERIOD_MS = const(1000)  # a reading a second, as site.md asks of a site meter
# status(): no reading yet (polled for less than max_age_ms) / fresh / stale or never came.
WAITING = const(0)
OK = const(1)
LOST = const(2)
STATUS_NAMES = ("waiting", "ok", "lost")
ROLES = ("ev", "mains")  # the config's meters by what they measure (docs/meters.md)


class Meter:
    def __init__(self, model, address, max_age_ms=3 * PERIOD_MS):
        # A bad model or address is a configuration error, raised at setup (the config's
        # checks are to name it to the installer first: docs/meters.md, "Wiring it in").
        row = models.find(model)
        if row is None:
            raise ValueError("unknown meter model %r" % model)
        if type(address) is not int or not 1 <= address <= 247:
            raise ValueError("meter address must be 1-247")
        self.model = model
        self.address = address
        self.max_age_ms = max_age_ms  # older than this, a reading is no reading
        self.phases = sum(1 for v in row[3][:3] if v)
        # What the tick reads: plain integers and one fixed array.
        self.current_da = array("i", (0, 0, 0))  # per phase, magnitude
        self.max_da = 0  # the highest phase
        self.power_w = 0  # total active power, import positive
        self.energy_wh = 0  # imported active energy, the meter's own register
        self.at_ms = 0  # board ms of the last good reading (when `good`)
        self.good = False  # a reading younger than max_age_ms was taken (see fresh())
        # What the device read reports: transactions by outcome (modbus_rtu.OUTCOMES).
        self.counts = array("i", [0] * len(rtu.OUTCOMES))
        self.last_error = rtu.OK  # the outcome of the last failed transaction
        self.last_exception = 0  # the code of the last exception reply
        self._function = row[1]
        self._low_first = row[2]
        self._reads = _plan(row[3])
        self._new = array("i", [0] * len(row[3]))  # a poll's values until all have come
        self._first_ms = None  # board ms of the first poll
        self._ever = False  # a whole reading has come, once

    def fresh(self, now):
        # For the tick: True while the last reading is at most max_age_ms old. Allocates
        # nothing; a stale meter's values are not to be used (docs/meters.md).
        return self.good and elapsed(now, self.at_ms) <= self.max_age_ms

    def feed(self, board, now):
        # The tick's hand-over, from board.sample() (allocates nothing): while the reading is
        # fresh, the board's meter inputs are its integers and the board is METERED; stale or
        # not read yet, the board reads as unmetered (the current unknown, counted as load:
        # control.py), its currents and power 0, its energy_wh the last reading's (control
        # counts energy over metered samples only).
        fresh = self.fresh(now)
        for p in range(3):
            board.phase_da[p] = self.current_da[p] if fresh else 0
        board.current_da = self.max_da if fresh else 0
        board.power_w = self.power_w if fresh else 0
        if fresh:
            board.energy_wh = self.energy_wh
            board.meter_ms = self.at_ms  # when it was read: a pause judges only later ones
        board.METERED = fresh

    def status(self, now):
        if self.fresh(now):
            return OK
        if self._first_ms is None or (not self._ever and
                                      elapsed(now, self._first_ms) <= self.max_age_ms):
            return WAITING
        return LOST

    def poll(self, master, now):
        # One reading: every read of the plan, in turn. The values are published together
        # once all of them have come; the first failure ends the poll (a silent meter
        # costs one response time, not one per read). Returns the outcome.
        if self._first_ms is None:
            self._first_ms = now
        new = self._new
        for start, count, fields in self._reads:
            outcome = master.read(self.address, self._function, start, count)
            if outcome == rtu.OK:
                for slot, offset, encoding, exponent in fields:
                    v = models.value(master.rx, 3 + offset, encoding, self._low_first,
                                     exponent)
                    if v is None:
                        outcome = rtu.WRONG  # the registers do not hold what the row says
                        break
                    new[slot] = v
            self.counts[outcome] += 1
            if outcome != rtu.OK:
                self.last_error = outcome
                if outcome == rtu.EXCEPTION:
                    self.last_exception = master.exception
                if self.good and elapsed(now, self.at_ms) > self.max_age_ms:
                    self.good = False  # stays stale, however long the clock runs
                return outcome
        top = 0
        for p in range(3):
            v = abs(new[p])
            self.current_da[p] = v
            if v > top:
                top = v
        self.max_da = top
        self.power_w = new[models.POWER]
        self.energy_wh = new[models.ENERGY]
        self.at_ms = now  # after the values: a tick that sees this time sees them
        self.good = self._ever = True
        return rtu.OK

    def report(self, now):
        # The device read's view (network side: allocates).
        counts = {}
        for i in range(len(rtu.OUTCOMES)):
            counts[rtu.OUTCOMES[i]] = self.counts[i]
        out = {"model": self.model, "address": self.address,
               "status": STATUS_NAMES[self.status(now)], "counts": counts}
        if self.good:
            out["ageMs"] = elapsed(now, self.at_ms)
            out["currents"] = [self.current_da[p] / 10 for p in range(self.phases)]
            out["powerW"] = self.power_w
            out["energyWh"] = self.energy_wh
        if self.last_error != rtu.OK:
            out["lastError"] = rtu.OUTCOMES[self.last_error]
        if self.last_exception:
            out["lastException"] = self.last_exception
        return out


def _plan(values):
    # The model's values as reads: one per run of adjacent registers (a transaction costs
    # a request, a response time and two silences; reading past a gap could meet registers
    # a meter refuses). [(start, count, ((slot, byte offset, encoding, exponent), ...))]
    # v[0] + 0: frozen, a table's integers above 0x1FFF are boxed objects (mpy-tool.py
    # freezes as small only what is small on every port, 14 bits), and every use of one
    # would allocate; arithmetic gives the port's own small integer, once, here.
    regs = sorted((v[0] + 0, slot, v[1], v[2]) for slot, v in enumerate(values) if v)
    reads = []
    for reg, slot, encoding, exponent in regs:
        words = models.WORDS[encoding]
        if reads and reg == reads[-1][0] + reads[-1][1] and \
                reads[-1][1] + words <= rtu.MAX_REGISTERS:
            start, count, fields = reads[-1]
            reads[-1] = (start, count + words, fields + ((slot, 2 * count, encoding,
                                                          exponent),))
        else:
            reads.append((reg, words, ((slot, 0, encoding, exponent),)))
    return reads


def bus(block, port, clock):
    # The config's "meters" block (config.py has checked it) on the board's serial port: the
    # bus's Poller, its meters by role as poller.ev and poller.mains (None where there is none).
    period = block.get("period_ms", PERIOD_MS)
    poller = Poller(rtu.Master(port), [], clock, period)
    for role in ROLES:
        m = block.get(role)
        meter = Meter(m["model"], m["address"], 3 * period) if m else None
        setattr(poller, role, meter)
        if meter:
            poller.meters.append(meter)
    return poller


class Poller:
    # The poll thread of one bus: run() reads every meter once per period_ms until stop().
    # clock() is the board's now_ms(). The waits release the GIL (nap), so the control
    # thread runs meanwhile. In lockstep (the bench in virtual time) there is no thread:
    # runner.Lockstep calls step(now) between ticks.
    def __init__(self, master, meters, clock, period_ms=PERIOD_MS):
        self.master = master
        self.meters = meters
        self.clock = clock
        self.period_ms = period_ms
        self.polls = 0
        self._running = False
        self._last = None  # when step() last polled

    def poll(self):
        for m in self.meters:
            m.poll(self.master, self.clock())
        self.polls += 1

    def step(self, now):
        # One poll when a period has passed since the last (lockstep's pacing of run()).
        if self._last is None or elapsed(now, self._last) >= self.period_ms:
            self._last = now
            self.poll()

    def run(self):
        self._running = True
        while self._running:
            start = self.clock()
            self.poll()
            spent = elapsed(self.clock(), start)
            if spent < self.period_ms:
                nap(self.period_ms - spent)

    def stop(self):
        self._running = False
