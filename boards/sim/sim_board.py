# The simulated board: the seam the firmware sees, with its wires held as plain
# attributes. The bench (tools/bench) fills the inputs and reads the outputs, either in
# the same CPython process or, from a micropython process, over a socket (Link).
import os
import _thread
from array import array
from micropython import const

_PWM_FULL = const(10000)  # 0.01 % duty resolution
_TICK_MS = const(10)


class FileStore:
    # Records as files; a write goes to a temporary file renamed over the old one, so a
    # power cut leaves either the old record or the new one.
    def __init__(self, root, opener=open, rename=os.rename):
        self.root = root
        self._open = opener
        self._rename = rename

    def read(self, key):
        try:
            with self._open(self.root + "/" + key, "rb") as f:
                return f.read()
        except OSError:
            return None

    def write(self, key, data):
        path = self.root + "/" + key
        with self._open(path + ".tmp", "wb") as f:
            f.write(data)
        self._rename(path + ".tmp", path)


class Board:
    SIMULATED = True
    PWM_FULL = _PWM_FULL
    TICK_MS = _TICK_MS
    # Updates (docs/ota.md): a bundle board, as make deploy sets one up, its record and app
    # folders in the state directory (sim_main boots through ota_boot); no OTA partitions.
    ota_partition = None

    def __init__(self, config, store, link=None):
        self.config = config
        self.store = store
        self.link = link
        self.ota_root = config.get("state_dir", ".")
        # The bench has a meter; "meter": false plays a board without one (current unknown).
        self.METERED = config.get("meter", True)
        self._phases = config["phases"]
        # A second contactor on L2/L3 ("phase_switch": true): one phase or three.
        self.PHASE_SWITCH = bool(config.get("phase_switch"))
        # Outputs start safe: steady +12 V (no PWM), contactor open, second contactor open.
        self.pilot_counts = _PWM_FULL
        self.contactor_drive = False
        self.phase_drive = False
        # Inputs, as measured on the bench side of the wire.
        self.now = 0
        self.high_mv = 12000
        self.low_mv = 12000
        self.feedback = False
        self.phase_feedback = False  # the second contactor's auxiliary contact
        self.current_da = 0
        self.phase_da = array("i", (0, 0, 0))
        self.power_w = 0
        self.energy_wh = 0
        self.meter_ms = 0  # when the meter inputs were measured (board ms)
        self.ev_meter = None  # a Modbus EV meter (config "meters"), set by the agent
        self.rcd_tripped = False
        self.unix_base_ms = None  # Unix time at now == 0, once the bench tells it
        self.reset_requested = False  # the bench's "reset button held"
        self.reset_cause = "power_on"
        # Held while the board runs; halt() lets go (sim_main ends the process on it).
        self.halted = _thread.allocate_lock()
        self.halted.acquire()
        self.restarting = False

    # -- the pilot, by state (the link carries it as PWM counts: 0 = F, PWM_FULL = x1)
    def pilot_x1(self):
        self.pilot_counts = _PWM_FULL

    def pilot_f(self):
        self.pilot_counts = 0

    def pilot_pwm(self, counts):
        self.pilot_counts = counts

    def set_contactor(self, closed):
        self.contactor_drive = closed

    def set_phase_contactor(self, closed):
        self.phase_drive = closed

    def sample(self):
        # Inputs are latched by the bench before each tick; real boards read ADCs here. With
        # a Modbus EV meter its reading is the meter's (the bench's meter: meter_peer.py).
        if self.ev_meter is not None:
            self.ev_meter.feed(self, self.now)
            return
        self.meter_ms = self.now
        if not self.METERED:
            self.current_da = self.power_w = self.energy_wh = 0
        # One figure, the same on each phase in use: L2/L3 only while the second contactor's
        # contact connects them.
        live = 1 if self.PHASE_SWITCH and not self.phase_feedback else self._phases
        for p in range(3):
            self.phase_da[p] = self.current_da if p < live else 0

    def serial_port(self):
        # The RS485 bus of config "meters": sockets to the bench's meters, whose ports the
        # bench puts in the config (bench_meter_ports), with a DE pin where "bus" names one.
        from sim_serial import SimPin, SocketPort
        bus = self.config["meters"].get("bus", {})
        return SocketPort(self.config["bench_meter_ports"], bus.get("baud", 9600),
                          SimPin() if bus.get("de") is not None else None)

    def show_status(self, status):
        pass  # no status LED on the bench: the readings say it all

    def ensure_network(self):
        pass  # the bench's loopback is always up

    def factory_reset_requested(self):
        held = self.reset_requested
        self.reset_requested = False
        return held

    def now_ms(self):
        return self.now

    def unix_ms(self):
        return None if self.unix_base_ms is None else self.unix_base_ms + self.now

    def wait_tick(self, on_request):
        # Report this tick's outputs and wait for the bench's next inputs; requests the
        # bench sends meanwhile go to on_request (process mode only).
        self.link.exchange(self, on_request)
        return self.now

    def halt(self):
        # The control loop died, or the bench closed the link (it stopped, or died): cut the
        # link, and the bench sees a dead board; sim_main then ends the process, so no
        # orphaned agent goes on answering MQTT for a bench that is gone.
        if self.link:
            self.link.sock.close()
        if self.halted.locked():
            self.halted.release()

    def restart(self):
        # An uplink asks for a restart (an OCPP Reset), or an update: sim_main ends the
        # process with RESTART_EXIT, and the bench (tools/bench/sim.py) powers a new one on,
        # as a board comes back after a reset. In lockstep the loop ends after its tick
        # (runner.Lockstep.run), so what it published reaches the bench before the link goes.
        self.restarting = True
        if self.halted.locked():
            self.halted.release()

    def publish(self, topic, payload, retain=False):
        self.link.publish(topic, payload, retain)

    def publish_to(self, topic, payload, retain=False, qos=1):
        # A topic outside the charger's own (a site record), in lockstep on the bench link.
        self.link.publish_to(topic, payload, retain)
