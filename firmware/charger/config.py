# The installation's local config file (written by the installer, never by the network):
# checked completely at boot, so a mistake is reported at once and the charger stays safe.

_NEEDED = (("device_id", str), ("supply_voltage", (int, float)), ("phases", int),
           ("max_current", (int, float)))
# The uplinks by the name the config gives them (`"uplinks": ["mqtt", "ocpp"]`): the module
# and class runner.serve builds for each (docs/uplinks.md). A new uplink is its module and
# one entry here. (Tuples of constants: a frozen image keeps them in flash, not the heap.)
UPLINKS = (("mqtt", "mqtt_uplink", "MqttUplink"), ("ocpp", "ocpp_uplink", "OcppUplink"),
           ("http", "http_uplink", "HttpUplink"))
# The uplinks that publish the agent's events (agent.flush): without one of them an event
# has no one to wait for (HTTP and OCPP carry none of the API's events).
EVENTS = ("mqtt",)
HTTP_PORT = 80  # the HTTP front's port when http.port is not given
TOKEN_MIN = 16  # characters of http.token, at least (http.md)
_OLDER = (("mqtt", ("mqtt",)), ("ocpp", ("ocpp",)), ("both", ("mqtt", "ocpp")))  # older
_MAX_BROKERS = 8  # "broker": a list of at most this many (the nodes of one cluster)


class ConfigError(Exception):
    pass


def check(cfg):
    # Every problem with an installation config, as sentences; [] if it is usable.
    if type(cfg) is not dict:
        return ["the config must be a JSON object"]
    errors = []
    names = uplinks(cfg)
    if type(names) is str:
        return [names]
    for key, kind in _NEEDED + ((("broker", (str, list)),) if "mqtt" in names else ()):
        if key not in cfg:
            errors.append("missing " + key)
        elif not isinstance(cfg[key], kind) or type(cfg[key]) is bool:
            errors.append(key + " has the wrong type")
    if errors:
        return errors
    if not 0 < len(cfg["device_id"]) <= 64 or "/" in cfg["device_id"] or "+" in cfg["device_id"] \
            or "#" in cfg["device_id"]:
        errors.append("device_id must be 1-64 characters without / + #")
    if not 100 <= cfg["supply_voltage"] <= 480:
        errors.append("supply_voltage must be 100-480 V (phase to neutral)")
    if cfg["phases"] not in (1, 3):
        errors.append("phases must be 1 or 3")
    if not 6 <= cfg["max_current"] <= 80:
        errors.append("max_current must be 6-80 A")
    if "cable_current" in cfg and not (type(cfg["cable_current"]) is int and
                                       6 <= cfg["cable_current"] <= 80):
        errors.append("cable_current must be 6-80 A")
    found = brokers(cfg) if "mqtt" in names else None
    if type(found) is str:
        errors.append(found)
    if "ocpp" in names:
        errors.extend(_check_ocpp(cfg.get("ocpp")))
    if "http" in names:
        errors.extend(_check_http(cfg.get("http")))
    if cfg.get("webhook_url") and not cfg.get("webhook_secret"):
        errors.append("webhook_url needs webhook_secret")
    if "site" in cfg:
        errors.extend(_check_site(cfg["site"], cfg["phases"]))
        if "mqtt" not in names and not (type(cfg.get("meters")) is dict and
                                        cfg["meters"].get("mains")):
            errors.append("site needs the mqtt uplink (the meter's topic) or meters.mains")
    if "phase_switch" in cfg:
        if type(cfg["phase_switch"]) is not bool:
            errors.append("phase_switch must be true or false")
        elif cfg["phase_switch"] and cfg["phases"] != 3:
            errors.append("phase_switch needs phases 3 (it drops a three-phase supply to one)")
    if "meters" in cfg:
        errors.extend(_check_meters(cfg["meters"], cfg.get("site")))
    if not names and cfg.get("webhook_url"):
        errors.append("webhook_url needs an uplink: with uplinks [] there is no network")
    if "ota" in cfg:
        errors.extend(_check_ota(cfg["ota"]))
    if "discovery" in cfg and type(cfg["discovery"]) is not bool:
        errors.append("discovery must be true or false")
    prefix = cfg.get("discovery_prefix")
    if prefix is not None and (type(prefix) is not str or not 0 < len(prefix) <= 64 or
                               any(ch in prefix for ch in "+#") or prefix.startswith("/")):
        errors.append("discovery_prefix must be a topic prefix without + or #")
    for key in ("ca_file", "username", "password", "webhook_url"):
        if key in cfg and type(cfg[key]) is not str:
            errors.append(key + " must be a string")
    if cfg.get("username") and "password" not in cfg:
        errors.append("username needs password")
    if str(cfg.get("webhook_url")).startswith("https://") and not cfg.get("ca_file"):
        errors.append("an https:// webhook_url needs ca_file (the receiver's certificate "
                      "is checked against it)")
    return errors


def uplinks(cfg):
    # The names of the uplinks the config asks for, in order (runner.threaded runs the last
    # in the calling thread), from "uplinks" or the older "uplink" ("mqtt", "ocpp" or
    # "both"; neither: MQTT); a sentence instead if neither form is right.
    if "uplinks" in cfg:
        names = cfg["uplinks"]
        if "uplink" in cfg:
            return "give uplinks or the older uplink, not both"
        if type(names) is not list or any(uplink(n) is None for n in names) or \
                len(set(names)) != len(names):
            return "uplinks must list %s, each at most once ([]: no network)" % ", ".join(
                u[0] for u in UPLINKS)
        return names
    old = cfg.get("uplink", "mqtt")
    for name, names in _OLDER:
        if old == name:
            return list(names)
    return "uplink must be mqtt, ocpp or both"


def carries_events(cfg):
    # Whether an uplink the (checked) config names publishes the agent's events.
    for name in uplinks(cfg):
        if name in EVENTS:
            return True
    return False


def brokers(cfg):
    # The MQTT brokers, [(host, port), ...] in the order the uplink dials them (docs/uplinks.md,
    # "Several brokers"): "broker" is one "HOST:PORT" or a list of them; a sentence instead
    # if it is not.
    given = cfg["broker"]
    entries = given if type(given) is list else [given]
    if not 0 < len(entries) <= _MAX_BROKERS:
        return "broker must be HOST:PORT or a list of 1-%d of them" % _MAX_BROKERS
    found = []
    for n, entry in enumerate(entries):
        host, port = _address(entry)
        name = "broker" if given is entry else "broker entry %d" % (n + 1)
        if host is None:
            return "%s must be HOST:PORT (a port 1-65535), not %s" % (name, _shown(entry))
        if (host, port) in found:
            return "%s repeats %s" % (name, entry)
        found.append((host, port))
    return found


def _address(entry):
    # (host, port) of a "HOST:PORT" string, else (None, None).
    if type(entry) is not str:
        return None, None
    host, _, port = entry.rpartition(":")
    if not host or any(ch in host for ch in " /") or not port.isdigit() or \
            not 0 < int(port) < 65536:
        return None, None
    return host, int(port)


def _shown(value):
    # A value from the config file in an error message, as JSON writes it.
    import json
    return json.dumps(value)


def uplink(name):
    # (module, class) of the uplink the config calls `name`, or None.
    for u in UPLINKS:
        if u[0] == name:
            return u[1:]
    return None


def _check_ocpp(o):
    # The OCPP uplink's block (docs/ocpp.md).
    if type(o) is not dict:
        return ["ocpp must be an object with at least url"]
    errors = []
    url = o.get("url")
    if type(url) is not str or not (url.startswith("ws://") or url.startswith("wss://")):
        errors.append("ocpp.url must be a ws:// or wss:// URL")
    elif url.startswith("wss://") and not o.get("ca_file"):
        errors.append("a wss:// ocpp.url needs ocpp.ca_file (the CSMS's certificate is "
                      "checked against it)")
    for key, limit in (("password", 40), ("id_tag", 20), ("ca_file", 128)):
        v = o.get(key)
        if v is not None and (type(v) is not str or not 0 < len(v) <= limit):
            errors.append("ocpp.%s must be a string of 1-%d characters" % (key, limit))
    t = o.get("timeout", 30)
    if type(t) is not int or not 1 <= t <= 300:
        errors.append("ocpp.timeout must be 1-300 s")
    return errors


def _check_ota(o):
    # Updates over the air (docs/ota.md): the publishers' public keys and the form this
    # charger takes. The keys are read by the code that verifies with them.
    if type(o) is not dict:
        return ["ota must be an object with keys"]
    keys = o.get("keys")
    if type(keys) is not list or not keys or any(type(k) is not str for k in keys):
        return ["ota.keys must list one or more public keys (python -m tools.ota pubkey)"]
    import ota_manifest
    try:
        ota_manifest.keys(keys)
    except ValueError as e:
        return [str(e)]
    if o.get("form", "bundle") not in ota_manifest.KINDS:
        return ["ota.form must be bundle (make deploy's .mpy files) or image (the agent "
                "frozen into MicroPython)"]
    return []


def _check_http(h):
    # The HTTP front's block (docs/http.md): it never serves without a token.
    if type(h) is not dict:
        return ["http must be an object with at least token"]
    errors = []
    why = token_problem(h.get("token"))
    if why:
        errors.append("http." + why)
    port = h.get("port", HTTP_PORT)
    if type(port) is not int or not 1 <= port <= 65535:
        errors.append("http.port must be 1-65535")
    host = h.get("host", "0.0.0.0")
    if type(host) is not str or not 0 < len(host) <= 64:
        errors.append("http.host must be an address to listen on (0.0.0.0: every interface)")
    return errors


def token_problem(token):
    # Why `token` cannot be the HTTP front's (a sentence), or None.
    if type(token) is not str or not TOKEN_MIN <= len(token) <= 128 or \
            any(not "!" <= ch <= "~" for ch in token):
        return "token must be %d-128 printable characters without spaces" % TOKEN_MIN
    return None


def _check_site(site, charger_phases):
    # docs/site.md's configuration (the installer's; read-only over the network).
    if type(site) is not dict:
        return ["site must be an object"]
    errors = []
    if type(site.get("id")) is not str or not 0 < len(site["id"]) <= 32 or \
            any(ch in site["id"] for ch in "/+#"):
        errors.append("site.id must be 1-32 characters without / + #")
    for key, lo, hi, needed in (("fuse_current", 6, 1000, True), ("margin_current", 0, 100, False),
                                ("fallback_current", 0, 80, False),
                                ("meter_timeout_s", 1, 3600, False)):
        v = site.get(key)
        if v is None and not needed:
            continue
        if type(v) not in (int, float) or not lo <= v <= hi:
            errors.append("site.%s must be a number %s-%s" % (key, lo, hi))
    phases = site.get("phases", [1])
    if type(phases) is not list or len(phases) != charger_phases or \
            any(p not in (1, 2, 3) for p in phases) or len(set(phases)) != len(phases):
        errors.append("site.phases must list the site phase (1-3) of each of the charger's "
                      "%d phase(s)" % charger_phases)
    return errors


# Modbus RTU line settings (docs/meters.md): the rates meters offer (Eastron: 2400-38400,
# ABB B23: 1200-115200), and parity N/E/O with one or two stop bits (Serial Line 2.5.1).
_BAUDS = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)


def _check_meters(m, site):
    # docs/meters.md's block; the bus's pins are the board's to check (esp32_pins.py).
    if type(m) is not dict:
        return ["meters must be an object"]
    import meter_models
    errors = []
    for key in m:
        if key not in ("bus", "ev", "mains", "period_ms"):
            errors.append("meters.%s is not known (bus, ev, mains, period_ms)" % key)
    bus = m.get("bus", {})
    if type(bus) is not dict:
        return errors + ["meters.bus must be an object"]
    if bus.get("baud", 9600) not in _BAUDS:
        errors.append("meters.bus.baud must be one of " + ", ".join(str(b) for b in _BAUDS))
    if bus.get("parity", "N") not in ("N", "E", "O"):
        errors.append("meters.bus.parity must be N, E or O")
    if bus.get("stop", 1) not in (1, 2):
        errors.append("meters.bus.stop must be 1 or 2")
    period = m.get("period_ms", 1000)
    if type(period) is not int or not 250 <= period <= 10000:
        errors.append("meters.period_ms must be 250-10000")
    addresses = []
    for role in ("ev", "mains"):
        meter = m.get(role)
        if meter is None:
            continue
        if type(meter) is not dict:
            errors.append("meters.%s must be an object with model and address" % role)
            continue
        row = meter_models.find(meter.get("model"))
        if row is None:
            errors.append("meters.%s.model must be one of %s" % (
                role, ", ".join(r[0] for r in meter_models.MODELS)))
        a = meter.get("address")
        if type(a) is not int or not 1 <= a <= 247:
            errors.append("meters.%s.address must be 1-247" % role)
        elif a in addresses:
            errors.append("meters.ev and meters.mains share address %d: each meter on the "
                          "bus needs its own" % a)
        addresses.append(a)
        if role == "mains" and row is not None and type(site) is dict:
            phases = site.get("phases", [1])
            measured = sum(1 for v in row[3][:3] if v)
            if type(phases) is list and any(p not in range(1, measured + 1) for p in phases
                                            if type(p) is int):
                errors.append("meters.mains: a %s measures %d phase(s), site.phases names "
                              "more" % (row[0], measured))
    if not addresses:
        errors.append("meters needs ev, mains or both")
    if m.get("mains") is not None and type(site) is not dict:
        errors.append("meters.mains needs a site block (the fuse it guards: docs/site.md)")
    return errors


def read(path):
    # The raw config, or None if there is none to read (for a fail-safe with what is known).
    import json
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def load(path, extra_check=None):
    import json
    try:
        with open(path) as f:
            cfg = json.load(f)
    except OSError:
        raise ConfigError(path + " not found: copy config.example.json, fill it in, deploy")
    except ValueError:
        raise ConfigError(path + " is not valid JSON")
    errors = check(cfg)
    if not errors and extra_check:
        errors = extra_check(cfg)
    if errors:
        raise ConfigError(path + ": " + "; ".join(errors))
    return cfg
