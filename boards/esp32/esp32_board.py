# The ESP32 charger controller (reference wiring: docs/esp32.md). Everything board-specific
# lives here: pins from the config, the pilot PWM and ADC, contactor (and the second one on
# L2/L3 where the config has phase_switch), RCD, S0 meter, the RS485 port of the Modbus
# meters, NVS, watchdog, WiFi and clock. The firmware core only sees the Board interface
# (docs/boards.md).
import time
from array import array
import machine
import esp32
from micropython import const
from nap import nap

_PWM_FULL = const(65535)
_TICK_MS = const(10)
_SAMPLES = const(48)  # ~1.7 ms of ADC reads: covers more than one 1 ms PWM period
_RESET_HOLD_MS = const(10000)
_FIRST_BYTE_MS = const(5)  # a meter's reply is waited for in naps this long (GIL released)
_CAUSES = {1: "power_on", 2: "hard_reset", 3: "watchdog", 4: "deep_sleep", 5: "soft_reset"}


def fail_safe(cfg):
    # A config too broken to run on: open the contactor and show F, if the pins are known.
    pins = cfg.get("pins") if type(cfg) is dict else None
    if type(pins) is not dict:
        return "pins unknown: outputs left as reset left them (the driver's pull-downs hold them)"
    for name in ("contactor", "phase_contactor", "pilot_pwm"):
        if type(pins.get(name)) is int:
            machine.Pin(pins[name], machine.Pin.OUT, value=0)  # coils off; pilot -12 V (F)
    return "contactor open, pilot F"


class NvsStore:
    # ESP-IDF NVS: log-structured with a CRC per 32-byte entry, so a power cut loses at most
    # the value being written. A 4-byte value (a record.word) is stored as an i32: one entry
    # per write, the cheapest thing NVS can write (docs/storage.md has the wear figures).
    def __init__(self, namespace="evse"):
        self.nvs = esp32.NVS(namespace)
        self._buf = bytearray(1024)
        self.commits = 0

    def read(self, key):
        try:
            v = self.nvs.get_i32(key)
            return bytes(((v >> 24) & 0xFF, (v >> 16) & 0xFF, (v >> 8) & 0xFF, v & 0xFF))
        except OSError:  # ESP_ERR_NVS_NOT_FOUND: not an i32 key
            pass
        try:
            n = self.nvs.get_blob(key, self._buf)
        except OSError:
            return None
        return bytes(self._buf[:n])

    def write(self, key, data):
        if len(data) == 4:
            v = data[0] << 24 | data[1] << 16 | data[2] << 8 | data[3]
            self.nvs.set_i32(key, v - (1 << 32) if v & 0x80000000 else v)
        else:
            self.nvs.set_blob(key, data)
        self.nvs.commit()
        self.commits += 1


class _Input:
    # A digital input that reads "active" at one level (Peter Hinch's Pushbutton `sense`):
    # the only place that knows which way an input is wired.
    def __init__(self, gpio, active_low):
        self.pin = machine.Pin(gpio, machine.Pin.IN, _pull(gpio))
        self.active_low = active_low

    def active(self):
        return self.pin.value() == (0 if self.active_low else 1)

    def irq(self, handler):
        # On becoming active. The ESP32 port has no hard pin interrupts (Pin.irq takes only
        # handler, trigger and wake): the handler is scheduled and runs between bytecodes,
        # so it is no faster than the control loop, which reads the pin every tick anyway
        # (docs/esp32-timing.md).
        edge = machine.Pin.IRQ_FALLING if self.active_low else machine.Pin.IRQ_RISING
        self.pin.irq(handler, edge)


class Rs485:
    # The RS485 port of config "meters" (docs/boards.md, "The serial port") over machine.UART
    # (v1.28.0, ports/esp32/machine_uart.c). A read has timeout 0 (what has come) and
    # timeout_char t3.5: the driver hands received bytes over once the line has been silent
    # that long (the UART's RX timeout), so a frame arrives whole. Meter poll thread only.
    def __init__(self, bus):
        from modbus_rtu import silence_us  # only on a board with meters: heap at boot
        self.baudrate = bus.get("baud", 9600)
        self._gap_ms = (silence_us(self.baudrate) + 999) // 1000
        self._uart = machine.UART(bus.get("uart", 1), baudrate=self.baudrate, bits=8,
                                  parity={"N": None, "E": 0, "O": 1}[bus.get("parity", "N")],
                                  stop=bus.get("stop", 1), tx=bus["tx"], rx=bus["rx"],
                                  rxbuf=512, timeout=0, timeout_char=self._gap_ms)
        de = bus.get("de")  # None: a transceiver that turns around by itself
        self.de = machine.Pin(de, machine.Pin.OUT, value=0) if de is not None else None

    def write(self, buf):
        self._uart.write(buf)
        if self.de is not None:
            # The master drops DE when this returns: only after the last bit has gone.
            # flush() holds the GIL for the send time (about 8 ms at 9600 baud for a
            # request): docs/meters.md, "Timing".
            self._uart.flush()

    def readinto(self, buf, timeout_ms):
        u = self._uart
        waited = 0
        while not u.any():  # the first byte, waited for in naps: the GIL is released
            if waited >= timeout_ms:
                return 0
            nap(_FIRST_BYTE_MS)
            waited += _FIRST_BYTE_MS
        view = memoryview(buf)
        got = 0
        while got < len(buf):
            got += u.readinto(view[got:]) or 0
            nap(self._gap_ms)  # the frame's end: the line silent for t3.5
            if not u.any():
                break
        return got


class Board:
    SIMULATED = False
    PWM_FULL = _PWM_FULL
    TICK_MS = _TICK_MS
    # Updates (docs/ota.md): the image form writes the other OTA app partition and boots it
    # with the bootloader's rollback (the OTA variant of ESP32_GENERIC, docs/esp32.md); the
    # update record and a bundle's folders live in the root of the file system.
    ota_root = "/"

    @property
    def ota_partition(self):
        return esp32.Partition  # asked for by the image form only (updater.py)

    def __init__(self, config, store=None):
        self.config = config
        pins = config["pins"]
        Pin = machine.Pin
        # Safe before anything else: contactors open, pilot steady +12 V (no PWM).
        self._coil = Pin(pins["contactor"], Pin.OUT, value=0)
        # The second contactor switches L2/L3 (docs/boards.md): open, one phase, at reset.
        self.PHASE_SWITCH = bool(config.get("phase_switch"))
        self._phase_coil = Pin(pins["phase_contactor"], Pin.OUT, value=0) \
            if self.PHASE_SWITCH else None
        self.phase_drive = False
        self._pwm = machine.PWM(Pin(pins["pilot_pwm"]), freq=1000, duty_u16=_PWM_FULL)
        # The generic image runs at 160 MHz: every stall in docs/esp32-timing.md is shorter
        # at 240.
        machine.freq(int(config.get("cpu_mhz", 240)) * 1000000)
        self._full_ok = _version() >= (1, 26)  # duty_u16(65535) is a true 100 % from 1.26
        self._pilot_pin = pins["pilot_pwm"]
        self._x1_as_gpio = False
        if not self._full_ok:
            self._steady(1)
        self.contactor_drive = False
        self._adc = machine.ADC(Pin(pins["pilot_adc"]))
        self._adc.atten(machine.ADC.ATTN_11DB)
        self._zero_uv = int(config.get("adc_zero_uv", 1650000))
        self._gain = int(config.get("adc_gain", 8))  # pilot mV per ADC mV
        # Inputs are active low (to GND, with pull-ups) unless config "active_low" says not.
        low = config.get("active_low") or {}
        inputs = {}
        for name in ("contactor_feedback", "phase_feedback", "rcd", "button", "meter_s0"):
            if pins.get(name) is not None:
                inputs[name] = _Input(pins[name], low.get(name, True))
        self._feedback = inputs.get("contactor_feedback")
        self._phase_feedback = inputs.get("phase_feedback")
        self._rcd = inputs.get("rcd")
        self.rcd_tripped = False
        if self._rcd:
            self._rcd.irq(self._on_rcd)  # drops the coil as soon as the VM runs it
            self.rcd_tripped = self._rcd.active()
            self._rcd_self_test(pins.get("rcd_test"))
        self._led = Pin(pins["led"], Pin.OUT, value=0) if pins.get("led") is not None else None
        self._lit = False
        self._button = inputs.get("button")
        self._pressed_at = -1
        self._pulses = 0
        self._pulse_ms = 0
        self._pulse_gap = 0
        self._imp_per_kwh = int(config.get("meter_imp_per_kwh", 1000))
        self._w_per_pulse_ms = 3600000000 // self._imp_per_kwh  # W x ms per pulse
        # Without a meter the current is unknown: the control core then treats the vehicle
        # as possibly under load (a pause waits for it to leave C, or 6 s).
        self.METERED = "meter_s0" in inputs
        if self.METERED:
            inputs["meter_s0"].irq(self._on_pulse)
        self._volts = int(config["supply_voltage"])
        self.store = store or NvsStore()
        self.high_mv = 0
        self.low_mv = 0
        self.feedback = False
        self.phase_feedback = False
        self.current_da = 0
        self.phase_da = array("i", (0, 0, 0))
        self._phases = int(config["phases"])
        self.power_w = 0
        self.energy_wh = 0
        self.meter_ms = 0  # when the meter inputs were measured (board ms)
        self.ev_meter = None  # a Modbus EV meter (config "meters"), set by the agent
        self.reset_cause = _CAUSES.get(machine.reset_cause(), "unknown")
        self._wdt = None
        if config.get("watchdog", True):  # false only for debugging at the REPL
            self._wdt = machine.WDT(timeout=int(config.get("watchdog_ms", 5000)))
        self._next = time.ticks_ms()
        self._clock_set = False
        self._wlan = None

    # -- outputs: the pilot by state (EVerest's evse_board_support: x1, F, PWM on)
    def _steady(self, level):
        # Before MicroPython 1.26 duty_u16(65535) still pulses: drive the pin instead.
        self._pwm.deinit()
        machine.Pin(self._pilot_pin, machine.Pin.OUT, value=level)
        self._x1_as_gpio = True

    def pilot_x1(self):
        if self._full_ok:
            self._duty(_PWM_FULL)
        else:
            self._steady(1)

    def pilot_f(self):
        self._duty(0)

    def pilot_pwm(self, counts):
        self._duty(counts)

    def _duty(self, counts):
        if self._x1_as_gpio:
            self._pwm = machine.PWM(machine.Pin(self._pilot_pin), freq=1000, duty_u16=counts)
            self._x1_as_gpio = False
        else:
            self._pwm.duty_u16(counts)

    def set_contactor(self, closed):
        self.contactor_drive = closed
        self._coil.value(1 if closed and not self.rcd_tripped else 0)

    def set_phase_contactor(self, closed):
        # Called only with the main contactor open and nothing flowing (phases.py).
        self.phase_drive = closed
        self._phase_coil.value(1 if closed else 0)

    def show_status(self, status):
        # Status LED: on while charging. `status` is one of control.STATUS_NAMES.
        lit = status == "charging"
        if self._led and lit != self._lit:
            self._lit = lit
            self._led.value(1 if lit else 0)

    # -- pin callbacks (scheduled by the port, not hard interrupts)
    def _on_rcd(self, pin):
        self._coil.value(0)
        self.rcd_tripped = True

    def _on_pulse(self, pin):
        now = time.ticks_ms()
        self._pulse_gap = time.ticks_diff(now, self._pulse_ms)
        self._pulse_ms = now
        self._pulses += 1

    def _rcd_self_test(self, test_pin):
        if test_pin is None:
            return
        t = machine.Pin(test_pin, machine.Pin.OUT, value=1)
        start = time.ticks_ms()
        while not self._rcd.active() and time.ticks_diff(time.ticks_ms(), start) < 100:
            pass
        t.value(0)
        tripped = self._rcd.active()
        time.sleep_ms(50)
        # A sensor that does not trip on its own test is treated as tripped: latched, safe.
        self.rcd_tripped = not tripped or self._rcd.active()

    # -- inputs
    def sample(self):
        adc = self._adc
        hi = -1
        lo = 1 << 29
        for _ in range(_SAMPLES):
            v = adc.read_uv()
            if v > hi:
                hi = v
            if v < lo:
                lo = v
        self.high_mv = (hi - self._zero_uv) * self._gain // 1000
        self.low_mv = (lo - self._zero_uv) * self._gain // 1000
        if self._feedback is not None:
            self.feedback = self._feedback.active()
        else:
            self.feedback = self.contactor_drive  # no auxiliary contact: assume it follows
        if self._phase_feedback is not None:
            self.phase_feedback = self._phase_feedback.active()
        else:
            self.phase_feedback = self.phase_drive
        if self._rcd is not None and self._rcd.active():
            self.rcd_tripped = True
        now = time.ticks_ms()
        if self.ev_meter is not None:
            self.ev_meter.feed(self, now)
        else:
            self.meter_ms = now
            if self.METERED:
                self._read_meter()

    def _read_meter(self):
        # S0 meter: energy from pulses (in two parts, so no product leaves the small-int
        # range and allocates, even past 1 GWh); power from the gap between the last two.
        n = self._pulses
        imp = self._imp_per_kwh
        self.energy_wh = n // imp * 1000 + n % imp * 1000 // imp
        gap = self._pulse_gap
        if gap <= 0 or time.ticks_diff(time.ticks_ms(), self._pulse_ms) > 2 * gap + 5000:
            self.power_w = 0
        else:
            self.power_w = self._w_per_pulse_ms // gap
        # One figure, the same on each phase in use: L2/L3 only while the second
        # contactor's contact connects them (a one-phase draw is not spread over three).
        live = 1 if self.PHASE_SWITCH and not self.phase_feedback else self._phases
        self.current_da = self.power_w * 10 // (self._volts * live)
        for p in range(3):
            self.phase_da[p] = self.current_da if p < live else 0

    def serial_port(self):
        # The Modbus meters' RS485 bus (config "meters", checked by esp32_pins.py).
        return Rs485(self.config["meters"].get("bus", {}))

    # -- time
    def now_ms(self):
        return time.ticks_ms()

    def unix_ms(self):
        if not self._clock_set:
            return None
        return time.time_ns() // 1000000  # allocates: network side only

    def wait_tick(self, on_request):
        self._next = time.ticks_add(self._next, _TICK_MS)
        wait = time.ticks_diff(self._next, time.ticks_ms())
        if wait > 0:
            time.sleep_ms(wait)
        else:
            self._next = time.ticks_ms()  # overran: do not race to catch up
        if self._wdt:
            self._wdt.feed()  # only reached while the control loop makes progress
        return time.ticks_ms()

    def halt(self):
        self._coil.value(0)
        self._wdt = None  # stop feeding: the watchdog resets the board

    def restart(self):
        # An OCPP Reset, once the transaction has ended: coil off, then a full reset.
        self._coil.value(0)
        machine.reset()

    def factory_reset_requested(self):
        if self._button is None:
            return False
        if not self._button.active():
            self._pressed_at = -1
            return False
        if self._pressed_at < 0:
            self._pressed_at = time.ticks_ms()
            return False
        if time.ticks_diff(time.ticks_ms(), self._pressed_at) >= _RESET_HOLD_MS:
            self._pressed_at = time.ticks_ms() + 3600000  # once per hold
            return True
        return False

    # -- network (called from the network thread)
    def ensure_network(self):
        import network
        cfg = self.config["wifi"]
        if self._wlan is None:
            self._wlan = network.WLAN(network.STA_IF)
            self._wlan.active(True)
        if not self._wlan.isconnected():
            self._wlan.connect(cfg["ssid"], cfg["password"])
            start = time.ticks_ms()
            while not self._wlan.isconnected():
                if time.ticks_diff(time.ticks_ms(), start) > 20000:
                    raise OSError("WiFi did not connect")
                nap(200)
        if not self._clock_set:
            try:
                import ntptime
                ntptime.settime()
                # Timestamps only where the epoch is 1970: none rather than wrong ones.
                self._clock_set = time.gmtime(0)[0] == 1970
            except (OSError, ImportError):
                pass


def _pull(gpio):
    # GPIO34-39 are input-only without pull resistors: those need an external pull-up.
    return machine.Pin.PULL_UP if gpio < 34 else None


def _version():
    import sys
    return sys.implementation.version[:2]
