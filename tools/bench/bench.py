"""The charger's hardware in software: pilot circuit, contactor (and a second one on L2/L3
where the installation switches between one phase and three), meter, RCD and a vehicle.

The bench is stepped in bench time (ms). Each step takes the board's outputs (pilot duty
counts, contactor drive), moves the world on, and returns what the board's inputs would
measure. It knows nothing of the firmware beyond those wires. Its Modbus meters (the EV
meter, the mains meter) are pymodbus servers on the board's RS485 bus (meter_peer.py),
holding what the bench measures in their registers.
"""
from tools.paths import cpython_paths

from .meter_peer import FAULTS as METER_FAULTS
from .meter_peer import MeterPeer
from .vehicle import Vehicle

cpython_paths()
import sim_board  # noqa: E402
from sim_link import INPUTS  # noqa: E402  (the link's frame layout, defined once there)

SOURCE_V = 12.0
SERIES_OHM = 1000.0
DIODE_V = 0.7
FAULTS = ("none", "pilot_short", "diode_short", "contactor_weld", "contactor_stuck_open",
          "rcd_trip", "overcurrent", "phase_contactor_weld", "phase_contactor_stuck_open")
# The vehicle's fields on bench/{id}/ev (sparse): JSON name -> (Vehicle attribute, JSON type,
# a number's (lowest, highest, unit)). The one definition of what the bench takes: the page
# and evctl check with ev_field_problem() before they send.
EV_FIELDS = {"connected": ("connected", bool, None), "request": ("request", bool, None),
             "maxCurrent": ("max_current", float, (0, 80, "amps")),  # a pilot offers <= 80 A
             "ventilation": ("ventilation", bool, None), "asleep": ("asleep", bool, None),
             "obeysPilot": ("obeys_pilot", bool, None),
             "followMs": ("follow_ms", int, (0, 60000, "ms"))}  # IEC 61851-1 allows 5 s


# The bench's Modbus meters: their bus addresses (SmartEVSE's advice: meters at 11 and up),
# and the EV meter's register when the bench starts: a meter that has counted before, so
# that only differences of its register may make the charger's energies.
METER_ROLES = ("ev", "mains")
METER_ADDRESSES = {"ev": 11, "mains": 12}
EV_METER_BASE_WH = 1234500


def meters_block(models, baud=9600):
    """The config's "meters" block for the bench's Modbus meters ({role: model})."""
    block = {"bus": {"baud": baud, "de": 4}}  # a DE pin: the half-duplex transceiver
    for role, model in models.items():
        block[role] = {"model": model, "address": METER_ADDRESSES[role]}
    return block


def meter_fault_problem(role, fault, roles=METER_ROLES):
    """Why bench/{id}/meter cannot set meter `role`'s fault to `fault` (one sentence), or
    None. `roles`: the meters this bench has."""
    if role not in roles:
        return "no %r meter on this bench (it has: %s)" % (role, ", ".join(roles) or "none")
    if fault not in METER_FAULTS + ("none",):
        return "unknown meter fault %r (known: %s, none)" % (fault, ", ".join(METER_FAULTS))
    return None


def ev_field_problem(key, value):
    """Why bench/{id}/ev cannot set vehicle field `key` to `value` (one sentence), or None."""
    if key not in EV_FIELDS:
        return "unknown vehicle field %r (known: %s)" % (key, ", ".join(EV_FIELDS))
    kind, bounds = EV_FIELDS[key][1:]
    if kind is bool:
        return None if type(value) is bool else "%s must be true or false" % key
    if type(value) not in (int, float) or not bounds[0] <= value <= bounds[1]:  # NaN too
        return "%s must be a number of %s from %s to %s" % (key, bounds[2], *bounds[:2])
    return None


class Bench:
    def __init__(self, voltage=230.0, phases=1, pwm_full=sim_board.Board.PWM_FULL,
                 phase_switch=False, meters=None):
        """meters: {role: model} for the Modbus meters on the board's bus (METER_ROLES)."""
        self.voltage = voltage
        self.phases = phases  # the installation's
        self.phase_switch = phase_switch  # a second contactor switches L2/L3
        self.pwm_full = pwm_full
        self.t = 0
        self.vehicle = Vehicle()
        self.fault = "none"
        self.pilot_override = None  # (high V, low V) forced onto the ADC, for band tests
        self.duty_counts = pwm_full  # what the board drives
        self.drive = False
        self.contactor = False  # the physical contact
        self.welded = False  # welded shut: stays so through other faults, until "none"
        self.phase_drive = False  # the second contactor: what the board drives ...
        self.phase_contactor = False  # ... and its contact (closed: three phases)
        self.phase_welded = False
        self.phase_log = []  # (t, closed): the second contactor's physical changes
        self.current = 0.0  # A per phase, measured
        self.phase_offset = [0.0, 0.0, 0.0]  # A a phase draws beyond it (an unbalanced load)
        self.energy_wh = 0.0
        self.high = SOURCE_V
        self.low = SOURCE_V
        self.contactor_log = []  # (t, closed): physical changes
        self.ev_changed_at = None  # bench time of the last change to the vehicle
        self.duty_log = []  # (t, duty counts): pilot changes
        self.peers = {}  # role -> MeterPeer: the Modbus meters on the board's bus
        self.mains_currents = None  # f() -> A per site phase: what the mains meter reads
        try:
            for role, model in (meters or {}).items():
                self.peers[role] = MeterPeer(model, METER_ADDRESSES[role]).start()
        except BaseException:
            self.close()
            raise
        self._feed_meters()

    # -- wires from the board
    def drive_outputs(self, duty_counts, contactor_drive):
        if duty_counts != self.duty_counts:
            self.duty_log.append((self.t, duty_counts))
        self.duty_counts = duty_counts
        self.drive = bool(contactor_drive)

    def drive_phase(self, closed):
        """The second contactor's coil, as the board drives it."""
        self.phase_drive = bool(closed)

    def apply_outputs(self, outputs):
        """The board's outputs after a tick: (duty counts, contactor, second contactor)."""
        counts, drive, phase = outputs
        self.drive_outputs(counts, drive)
        self.drive_phase(phase)

    @property
    def phases_in_use(self):
        """The phases the vehicle can draw on now."""
        if not self.phase_switch:
            return self.phases
        return 3 if self.phase_contactor else 1

    @property
    def duty_percent(self):
        return 100.0 * self.duty_counts / self.pwm_full

    # The pilot as the EVSE drives it, by name (docs/safety.md): x1, F, or PWM offering current.
    @property
    def x1(self):
        return self.duty_counts >= self.pwm_full

    @property
    def f(self):
        return self.duty_counts <= 0

    @property
    def pwm_on(self):
        return 0 < self.duty_counts < self.pwm_full

    def x1_or_f(self, counts):
        return counts <= 0 or counts >= self.pwm_full

    def step(self, dt):
        """Advance dt ms under the outputs last driven."""
        self.t += dt
        self._move_contactor()
        self.vehicle.update(self.t, self.duty_percent, self.contactor)
        draw = self.vehicle.draw if self.contactor else 0.0
        if self.fault == "overcurrent" and self.contactor and self.vehicle.s2:
            draw = draw * 1.3 + 1.0
        self.current = draw
        self.energy_wh += sum(self.phase_currents()) * self.voltage * dt / 3600000.0
        self.high, self.low = self._pilot_levels()
        self._feed_meters()

    def phase_currents(self):
        """A on each of the charger's phases: the vehicle's draw, plus phase_offset while it
        draws, on the phases in use (L2 and L3 carry nothing while the second contactor is
        open)."""
        live = self.phases_in_use if self.current else 0
        return [self.current + self.phase_offset[p] if p < live else 0.0
                for p in range(self.phases)]

    # -- the Modbus meters
    def _feed_meters(self):
        ev = self.peers.get("ev")
        if ev:
            amps = self.phase_currents()
            ev.set([round(a * 10) for a in amps], round(sum(amps) * self.voltage),
                   EV_METER_BASE_WH + int(self.energy_wh))
        mains = self.peers.get("mains")
        if mains and self.mains_currents:
            amps = self.mains_currents()
            mains.set([round(a * 10) for a in amps], round(sum(amps) * self.voltage))

    def meters_config(self, baud=9600):
        """The config's "meters" block and bench_meter_ports for these meters, or {}."""
        if not self.peers:
            return {}
        return {"meters": meters_block({r: p.model for r, p in self.peers.items()}, baud),
                "bench_meter_ports": [p.port for p in self.peers.values()]}

    def set_meter_fault(self, role, fault):
        problem = meter_fault_problem(role, fault, tuple(self.peers))
        if problem:
            raise ValueError(problem)
        self.peers[role].fault = None if fault == "none" else fault

    def close(self):
        for peer in self.peers.values():
            peer.close()

    def _move_contactor(self):
        closed = self.drive
        if self.fault == "contactor_weld" and self.contactor:
            self.welded = True
        if self.welded and self.contactor:
            closed = True
        elif self.fault == "contactor_stuck_open":
            closed = False
        if closed != self.contactor:
            self.contactor = closed
            self.contactor_log.append((self.t, closed))
        closed = self.phase_drive and self.phase_switch
        if self.fault == "phase_contactor_weld" and self.phase_contactor:
            self.phase_welded = True
        if self.phase_welded and self.phase_contactor:
            closed = True
        elif self.fault == "phase_contactor_stuck_open":
            closed = False
        if closed != self.phase_contactor:
            self.phase_contactor = closed
            self.phase_log.append((self.t, closed))

    def _pilot_levels(self):
        if self.pilot_override is not None:
            return self.pilot_override
        if self.fault == "pilot_short":
            return 0.0, 0.0
        r = self.vehicle.resistance
        high = SOURCE_V
        if r is not None:
            high = SOURCE_V - SERIES_OHM * (SOURCE_V - DIODE_V) / (SERIES_OHM + r)
        low = -SOURCE_V
        if r is not None and self.fault == "diode_short":
            low = -SOURCE_V * r / (SERIES_OHM + r)
        if self.duty_counts <= 0:
            return low, low  # steady -12 V: the diode blocks, only the low level
        if self.duty_counts >= self.pwm_full:
            return high, high  # steady +12 V: no low phase to measure
        return high, low

    def board_inputs(self):
        """What the board's inputs read now, in the order of the sim link's INPUTS."""
        s0 = "ev" not in self.peers  # a board with a Modbus EV meter has no S0 meter
        values = {"now": self.t, "high_mv": int(round(self.high * 1000)),
                  "low_mv": int(round(self.low * 1000)), "feedback": int(self.contactor),
                  "current_da": int(self.current * 10) if s0 else 0,
                  "power_w": int(self.current * self.voltage * self.phases_in_use) if s0 else 0,
                  "energy_wh": int(self.energy_wh) if s0 else 0,
                  "rcd_tripped": int(self.rcd_tripped),
                  "phase_feedback": int(self.phase_contactor)}
        return tuple(values[name] for name in INPUTS)

    @property
    def rcd_tripped(self):
        return self.fault == "rcd_trip"

    @property
    def power_kw(self):
        return self.current * self.voltage * self.phases_in_use / 1000.0

    def set_fault(self, name):
        if name not in FAULTS:
            raise ValueError("unknown fault %r" % name)
        self.fault = name
        if name == "none":
            self.welded = self.phase_welded = False  # the bench's repair

    def set_ev(self, fields):
        """Change the vehicle's fields named in `fields` (all or none: ValueError names the
        first bad one)."""
        for key, value in fields.items():
            problem = ev_field_problem(key, value)
            if problem:
                raise ValueError(problem)
        self.ev_changed_at = self.t
        v = self.vehicle
        for key, value in fields.items():
            setattr(v, EV_FIELDS[key][0], value)

    def pilot_state(self):
        """The pilot state the bench sees on the wire (its own judgement, not the agent's)."""
        h = self.high
        if h > 10.5:
            return "A"
        if h > 7.5:
            return "B"
        if h > 4.5:
            return "C"
        if h > 1.5:
            return "D"
        if h > -1.5:
            return "E"
        return "F"

    def readings(self):
        return {"t": self.t,
                "pilot": {"state": self.pilot_state(), "dutyPercent": round(self.duty_percent, 2),
                          "high": round(self.high, 2), "low": round(self.low, 2)},
                "contactor": "closed" if self.contactor else "open",
                "current": round(self.current, 2), "phases": self.phases_in_use,
                "phaseContactor": (("closed" if self.phase_contactor else "open")
                                   if self.phase_switch else None),
                "power": round(self.power_kw, 3),
                "energy": round(self.energy_wh / 1000.0, 4), "fault": self.fault,
                "evChangedAt": self.ev_changed_at,
                "contactorChangedAt": self.contactor_log[-1][0] if self.contactor_log else None,
                "ev": self.vehicle.describe(),
                "meters": {role: {"model": p.model, "address": p.address,
                                  "fault": p.fault or "none", "requests": p.requests,
                                  "answered": p.answered}
                           for role, p in self.peers.items()}}
