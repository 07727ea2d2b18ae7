# Stand-in for the ESP32's machine module under the unix port: records pin activity.
import _world

_cfg_pins = {}
try:
    import json
    with open("config.json") as _f:
        _cfg_pins = json.load(_f).get("pins", {})
except Exception:
    pass


def reset_cause():
    return 1


def reset():
    # The board restarts: here the process ends (it never returns on the ESP32 either).
    _world.log("reset", last=True)
    raise SystemExit(75)


def freq(hz=None):
    if hz is not None:
        _world.log("freq", hz)
    return 240000000


class Pin:
    IN = 1
    OUT = 3
    PULL_UP = 1
    IRQ_FALLING = 2

    def __init__(self, pin, mode=None, pull=None, value=None):
        self.id = pin
        self.mode = mode
        if value is not None:
            self.value(value)

    def value(self, v=None):
        if v is None:
            if self.id == _cfg_pins.get("contactor_feedback"):
                return 0 if _world.pins.get(_cfg_pins.get("contactor")) else 1  # active low
            if self.id == _cfg_pins.get("phase_feedback"):  # the second contactor's
                closed = _world.PHASE_WELDED or _world.pins.get(_cfg_pins.get("phase_contactor"))
                return 0 if closed else 1
            return _world.pins.get(self.id, 1)  # inputs idle high (pull-ups)
        _world.pins[self.id] = v
        _world.pwm.pop(self.id, None)
        _world.log("pin", self.id, v)

    def irq(self, handler=None, trigger=3, wake=None):
        # The ESP32 port's signature: no `hard` (a call with it raises TypeError there too).
        _world.log("irq", self.id, trigger)


class PWM:
    def __init__(self, pin, freq=0, duty_u16=0):
        self.id = pin.id
        _world.log("pwm_init", self.id, freq)
        self.duty_u16(duty_u16)

    def duty_u16(self, d):
        _world.pwm[self.id] = d
        _world.log("pwm", self.id, d)

    def deinit(self):
        _world.pwm.pop(self.id, None)
        _world.log("pwm_deinit", self.id)


class ADC:
    ATTN_11DB = 3

    def __init__(self, pin):
        self.id = pin.id
        self.n = 0
        self.reads = 0

    def atten(self, a):
        pass

    def read_uv(self):
        # The pilot as the divider shows it: 1.65 V + pilot / 8, high for the duty's share.
        self.reads += 1
        if _world.ADC_FAIL_AFTER and self.reads > _world.ADC_FAIL_AFTER:
            raise OSError("ADC stand-in failure")
        duty = _world.pwm.get(_cfg_pins.get("pilot_pwm"))
        pwm_on = duty is not None and 0 < duty < 65535
        ev = _world.EV
        # "C!" is a vehicle that keeps S2 closed (and its load on) when PWM stops.
        high = {"A": 12000, "B": 9000, "C": 6000 if pwm_on else 9000, "C!": 6000}[ev]
        if duty == 0 or (duty is None and not _world.pins.get(_cfg_pins.get("pilot_pwm"))):
            return 1650000 - 12000 * 125
        self.n = (self.n + 1) % 20  # one PWM period every 20 reads
        level = high if (not pwm_on or self.n * 65535 < duty * 20) else -12000
        return 1650000 + level * 125


class WDT:
    def __init__(self, timeout=5000):
        _world.log("wdt_start", timeout)

    def feed(self):
        _world.log("wdt_feed")



def UART(*args, **kw):
    # The RS485 stand-in (_uart.py), loaded only by a board with meters: this module is
    # compiled into the 56K heap of the boot tests, which a real machine module costs nothing.
    from _uart import UART as uart
    return uart(*args, **kw)
