# The ESP32 board's config checks, with no hardware import: the board runs them at boot and
# `make deploy` runs the same code on the host before it touches a board.

_REQUIRED_PINS = ("pilot_pwm", "pilot_adc", "contactor")
_OPTIONAL_PINS = ("contactor_feedback", "phase_contactor", "phase_feedback", "rcd", "rcd_test",
                  "meter_s0", "led", "button")
_OUTPUTS = ("pilot_pwm", "contactor", "phase_contactor", "rcd_test", "led")


def check_pins(cfg):
    # Board-specific config problems, as sentences (firmware/charger/config.py checks the
    # installation).
    pins = cfg.get("pins")
    if type(pins) is not dict:
        return ["missing pins"]
    errors = []
    used = {}
    for name in _REQUIRED_PINS + _OPTIONAL_PINS:
        if name not in pins:
            if name in _REQUIRED_PINS:
                errors.append("missing pins." + name)
            continue
        gpio = pins[name]
        if type(gpio) is not int or not 0 <= gpio <= 39:
            errors.append("pins.%s must be a GPIO number" % name)
            continue
        if 6 <= gpio <= 11:
            errors.append("pins.%s: GPIO6-11 belong to the SPI flash" % name)
        elif gpio >= 34 and name in _OUTPUTS:
            errors.append("pins.%s must be an output: GPIO34-39 are input-only" % name)
        if gpio in used:
            errors.append("pins.%s and pins.%s are both GPIO%d" % (used[gpio], name, gpio))
        used[gpio] = name
    # The second contactor (L2/L3) comes with phase_switch, and only with it.
    if cfg.get("phase_switch") is True and "phase_contactor" not in pins:
        errors.append("phase_switch needs pins.phase_contactor (the L2/L3 contactor's coil)")
    for name in ("phase_contactor", "phase_feedback"):
        if name in pins and cfg.get("phase_switch") is not True:
            errors.append("pins.%s needs \"phase_switch\": true" % name)
    if type(pins.get("pilot_adc")) is int and not 32 <= pins["pilot_adc"] <= 39:
        errors.append("pins.pilot_adc must be on ADC1 (GPIO32-39): ADC2 stops with WiFi on")
    meters = cfg.get("meters")
    if type(meters) is dict:
        errors.extend(_check_bus(meters.get("bus"), used))
        if meters.get("ev") is not None and "meter_s0" in pins:
            errors.append("meters.ev and pins.meter_s0: give one EV meter")
    wifi = cfg.get("wifi")
    if cfg.get("uplinks") != [] and (type(wifi) is not dict or type(wifi.get("ssid")) is not str):
        errors.append("missing wifi.ssid")
    return errors


def _check_bus(bus, used):
    # The RS485 bus of the Modbus meters (docs/meters.md): a UART (1 or 2: UART0 is the
    # console), its TX and RX pins and the transceiver's DE/RE pin (or none: auto-direction).
    if type(bus) is not dict:
        return ["meters.bus must be an object with uart, tx and rx"]
    errors = []
    if bus.get("uart", 1) not in (1, 2):
        errors.append("meters.bus.uart must be 1 or 2 (UART0 is the console)")
    for name in ("tx", "rx", "de"):
        gpio = bus.get(name)
        if gpio is None and name == "de":
            continue
        if type(gpio) is not int or not 0 <= gpio <= 39:
            errors.append("meters.bus.%s must be a GPIO number" % name)
            continue
        if 6 <= gpio <= 11:
            errors.append("meters.bus.%s: GPIO6-11 belong to the SPI flash" % name)
        elif gpio >= 34 and name != "rx":
            errors.append("meters.bus.%s must be an output: GPIO34-39 are input-only" % name)
        if gpio in used:
            other = used[gpio]
            errors.append("meters.bus.%s and %s are both GPIO%d" % (
                name, other if other.startswith("meters.") else "pins." + other, gpio))
        used[gpio] = "meters.bus." + name
    return errors
