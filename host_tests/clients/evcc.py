"""evcc's side of a `custom` charger, emulated from evcc's own source, for host tests.

    config = recipe()                                   # the YAML block of docs/evcc.md
    evcc = Evcc(config, "127.0.0.1:1883", time_factor=0.1).start()
    evcc.loadpoint.target = 8                           # what evcc's site logic decided
    ...
    evcc.die()                                          # renewals stop, as when evcc crashes

The recipe is taken as written: the topics, the payload templates and the jq expressions
come from the YAML, payloads are rendered the way evcc renders them, and jq runs in a real
jq (libjq, the `jq` package). Anything in the YAML this emulation does not implement is
refused with a ConfigError, as evcc refuses a key it does not know, so the recipe cannot
use something the test would silently skip.

What was read, in evcc-io/evcc at b29b49e3056ead3c99ff1f4711b2bb17083114b0 (2026-08-08),
and what each piece here follows:
- charger/charger.go, charger/measurement/energy.go: the custom charger. `status` is a
  string getter parsed by api.ChargeStatusString (api/chargemodestatus.go: first letter;
  E and F are errors); `enabled` a bool getter; `enable` a bool setter with parameter
  `enable`; `maxcurrent` an int setter with parameter `maxcurrent`; `power` (W) and
  `energy` (kWh) float getters; `phases1p3p` an int setter with parameter `phases`, refused
  without `tos: true` ("1p3p does no longer handle disable/enable": the charger pauses
  around a switch itself).
- plugin/mqtt.go, plugin/mqtt_handler.go, plugin/helper.go: a getter listens on its topic
  (one subscription per getter, QoS 1) into a util.Monitor; each read checks the known
  error strings, then runs the pipeline. A setter renders its payload with
  setFormattedValue and publishes it, QoS 1, not retained unless `retained: true`.
- plugin/pipeline/pipeline.go, util/jq/jq.go: jq must yield exactly one result, which is
  formatted with Go's %v (`fmt.Appendf(nil, "%v", v)`).
- plugin/getter.go, plugin/helper.go: a float is strconv.ParseFloat of that text (NaN and
  Inf refused) times `scale`; a bool is cast.ToBoolE of it.
- util/format.go (ReplaceFormatted): the payload is a Go text/template (with sprig's
  functions) executed on {param: value} first; then every `${var[:format]}` is replaced
  with FormatValue(format, value).
- util/monitor.go: a value older than `timeout` is an error (ErrOutdated); the first read
  waits up to `timeout` for a first value; without a timeout any received value is good.
- plugin/watchdog.go: the write goes through at once; the same value again while the
  watchdog runs is dropped; the last value is written again every timeout/2.
- core/loadpoint.go: Update() reads the status, runs syncCharger(), then setLimit();
  setLimit() calls MaxCurrent only when the current changed and Enable only when enabled
  changed; the start-up read in Prepare; chargerSwitchDuration (60 s) during which the
  charger's enabled is not adopted; scalePhases() calls Phases1p3p only when the phases
  differ from the loadpoint's, and neither disables nor re-enables the charger around it.
- util/decoder.go: a key a plugin does not know is an error (mapstructure ErrorUnused,
  keys matched case-insensitively).
- plugin/http.go, util/request/helper.go: the `http` plugin (read at 04d67a7e, 2026-12).
  `method` defaults to GET, and a `body` makes a GET a POST; a getter sends the request
  with `uri` as it is and runs the pipeline on the body; a setter renders `uri` and
  `body` with setFormattedValue, as the mqtt plugin renders its payload, and sends them;
  `headers` go as given; an answer other than 2xx, or none within `timeout` (10 s), is an
  error. Its response cache (`cache`) is not emulated: without it, evcc's cache layer keeps
  nothing the charger marks `no-store`, and the charger marks every answer so.

What is not emulated: evcc's decision of the current and of the phases (site meters, PV,
modes, plans, pvScalePhases' timers: the test sets `loadpoint.target` and
`loadpoint.target_phases`), vehicles, measured phases, circuits, and every plugin but `mqtt`,
`http` and `watchdog`. Durations that belong to evcc (its interval, the watchdog's timeout,
chargerSwitchDuration) are multiplied by `time_factor` so a test can run faster than real
time; the getters' `timeout` is not, because it is measured against the charger's own
heartbeat, which the test does not speed up.
"""
import json
import re
import threading
import time
import urllib.error
import urllib.request
from decimal import Decimal

import jq
import paho.mqtt.client as mqtt
import yaml

CHARGER_SWITCH_DURATION = 60.0  # s, core/loadpoint.go chargerSwitchDuration
MIN_CURRENT = 6  # A, evcc's default minimum current of a loadpoint


class ConfigError(Exception):
    """The YAML asks for something evcc would refuse, or this emulation does not implement."""


def read_recipe(markdown_path, source="mqtt", phase_switch=False):
    """The evcc.yaml of a Markdown page whose charger reads its status through the plugin
    `source`: the one fenced ```yaml block that does, parsed; with `phase_switch` the keys of
    the one block holding `phases1p3p` added to its charger (docs/evcc.md)."""
    with open(markdown_path, encoding="utf-8") as f:
        blocks = [yaml.safe_load(b) for b in re.findall(r"^```yaml\n(.*?)^```", f.read(),
                                                        re.S | re.M)]
    found = [b for b in blocks if isinstance(b, dict) and
             [c.get("status", {}).get("source") for c in b.get("chargers") or []] == [source]]
    if len(found) != 1:
        raise ConfigError("%s: expected one ```yaml block with a %s charger, found %d" % (
            markdown_path, source, len(found)))
    recipe = found[0]
    if phase_switch:
        keys = [b for b in blocks if isinstance(b, dict) and "phases1p3p" in b]
        if len(keys) != 1:
            raise ConfigError("%s: expected one ```yaml block with phases1p3p, found %d" % (
                markdown_path, len(keys)))
        recipe["chargers"][0].update(keys[0])
    return recipe


# --- Go's formatting -----------------------------------------------------------------------

def go_float(f):
    """Go's %v of a float64: strconv 'g' with the shortest digits, exponent form when the
    decimal exponent is < -4 or >= 6 (strconv/ftoa.go: "if precision was the shortest
    possible, use precision 6 for this decision"); fmtE writes at least two exponent
    digits."""
    f = float(f)
    if f != f:
        return "NaN"
    if f in (float("inf"), float("-inf")):
        return "+Inf" if f > 0 else "-Inf"
    if f == 0:
        return "-0" if str(f).startswith("-") else "0"
    # repr() gives the shortest digits that round-trip, as Go's shortest formatting does.
    sign, digits, exponent = Decimal(repr(f)).normalize().as_tuple()
    digits = "".join(map(str, digits))
    dp = len(digits) + exponent  # position of the decimal point
    neg = "-" if sign else ""
    x = dp - 1
    if x < -4 or x >= 6:
        mant = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return "%s%se%s%02d" % (neg, mant, "-" if x < 0 else "+", abs(x))
    if dp <= 0:
        return neg + "0." + "0" * -dp + digits
    if dp >= len(digits):
        return neg + digits + "0" * (dp - len(digits))
    return neg + digits[:dp] + "." + digits[dp:]


def go_value(v):
    """Go's %v of what a JSON value decodes to in Go (encoding/json into `any`: every
    number a float64)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return go_float(v)
    if isinstance(v, str):
        return v
    if v is None:
        return "<nil>"
    raise ConfigError("a jq result must be a string, number, boolean or null here, not %r"
                      % (v,))


def go_print(v):
    """fmt.Sprint of a value a setter is given (Go bool, int64, float64, string)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return go_float(v)
    return str(v)


def go_duration(text):
    """time.ParseDuration, for the units a config uses."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return float(text) / 1e9  # mapstructure: a bare number is nanoseconds
    parts = re.fullmatch(r"((\d+(\.\d+)?)(h|m|s|ms))+", str(text))
    if not parts:
        raise ConfigError("not a Go duration: %r" % (text,))
    unit = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    return sum(float(n) * unit[u] for n, _, u in re.findall(r"(\d+(\.\d+)?)(ms|h|m|s)", text))


# --- payload templates (util/format.go ReplaceFormatted) ---------------------------------

_ACTION = re.compile(r"{{(.*?)}}", re.S)
_VAR = re.compile(r"(?i)\${(\w+)(:([a-zA-Z0-9%.]+))?}")  # util/format.go's regex, verbatim
_NO_VALUE = object()


def _field(expr, kv):
    # `.name` on the map[string]any evcc executes the template with; a missing key is
    # Go's zero value (printed "<no value>", false in an `if`).
    if not re.fullmatch(r"\.\w+", expr):
        raise ConfigError("template action %r is not emulated" % expr)
    return kv.get(expr[1:], _NO_VALUE)


def _pipeline(expr, kv):
    expr = expr.strip()
    if re.fullmatch(r"now\s*\|\s*unixEpoch", expr):
        # sprig: now is time.Now, unixEpoch(t) is strconv.FormatInt(t.Unix(), 10)
        return str(int(time.time()))
    return _field(expr, kv)


def execute_template(text, kv):
    """text/template's Execute for the subset a payload here may use: text, `{{ .name }}`,
    `{{ now | unixEpoch }}` and `{{ if .name }}...{{ else }}...{{ end }}`."""
    out = []
    stack = []  # for each open `if`: [condition, in the else branch]

    def emitting():
        return all(cond != in_else for cond, in_else in stack)

    pos = 0
    for m in _ACTION.finditer(text):
        if emitting():
            out.append(text[pos:m.start()])
        pos = m.end()
        action = m.group(1)
        if action.startswith("-") or action.endswith("-"):
            raise ConfigError("trim markers {{- -}} are not emulated")
        action = action.strip()
        if action.startswith("if "):
            value = _pipeline(action[3:], kv)
            stack.append([value not in (_NO_VALUE, False, 0, "", None), False])
        elif action == "else":
            if not stack or stack[-1][1]:
                raise ConfigError("template: unexpected {{else}}")
            stack[-1][1] = True
        elif action == "end":
            if not stack:
                raise ConfigError("template: unexpected {{end}}")
            stack.pop()
        elif emitting():
            value = _pipeline(action, kv)
            out.append("<no value>" if value is _NO_VALUE else go_print(value))
    if stack:
        raise ConfigError("template: unexpected EOF (an {{if}} without {{end}})")
    out.append(text[pos:])
    return "".join(out)


def format_value(fmt, value):
    """util/format.go FormatValue, for the formats emulated here (none, %v, %d)."""
    if isinstance(value, bool) and fmt == "%d":
        return "1" if value else "0"
    if fmt in ("", "%v"):
        return go_print(value)
    if fmt == "%d" and isinstance(value, int):
        return str(value)
    raise ConfigError("${var:%s} is not emulated" % fmt)


def replace_formatted(text, kv):
    """util/format.go ReplaceFormatted: the template first, then ${var[:format]}."""
    s = execute_template(text, kv)
    wanted = []
    while True:
        m = _VAR.search(s)
        if not m:
            break
        key, fmt = m.group(1), m.group(3) or ""
        value = next((v for k, v in kv.items() if k.lower() == key.lower()), None)
        if value is None:
            wanted.append(key)
            new = "?"
        else:
            new = format_value(fmt, value)
        s = s.replace(m.group(0), new)
    if wanted:
        raise ValueError("wanted: %s, got: %s" % (sorted(wanted), sorted(kv)))
    return s


def set_formatted_value(payload, param, value):
    """plugin/helper.go setFormattedValue: without a payload the value itself, as %v."""
    if not payload:
        return go_print(value)
    return replace_formatted(payload, {param: value})


# --- the MQTT client and the plugins ------------------------------------------------------

def _decode(cfg, known, emulated, what):
    # util.DecodeOther: keys match case-insensitively, an unknown key is an error.
    out = {}
    for key, value in cfg.items():
        k = str(key).lower()
        if k in emulated:
            out[k] = value
        elif k in known:
            raise ConfigError("%s: %r is a real evcc key this emulation does not implement"
                              % (what, key))
        else:
            raise ConfigError("%s: invalid key %r (evcc refuses it)" % (what, key))
    return out


class Client:
    """evcc's plugin/mqtt Client: one connection, QoS 1, a listener list per topic."""

    def __init__(self, broker):
        host, _, port = broker.rpartition(":")
        self.listeners = {}
        self.lock = threading.Lock()
        self.paho = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, clean_session=True)
        self.paho.on_message = self._message
        connected = threading.Event()
        self.paho.on_connect = lambda *a: connected.set()
        self.paho.connect(host, int(port), keepalive=30)
        self.paho.loop_start()
        if not connected.wait(10):
            raise RuntimeError("evcc: cannot connect to the broker at %s" % broker)

    def _message(self, client, userdata, msg):
        payload = msg.payload.decode("utf-8", errors="replace")
        if not payload:
            return
        with self.lock:
            callbacks = list(self.listeners.get(msg.topic, ()))
        for cb in callbacks:
            cb(payload)

    def listen(self, topic, callback):
        with self.lock:
            self.listeners.setdefault(topic, []).append(callback)
        result, mid = self.paho.subscribe(topic, qos=1)
        if result != mqtt.MQTT_ERR_SUCCESS:
            raise RuntimeError("subscribe %s: %s" % (topic, result))

    def publish(self, topic, retained, payload):
        self.paho.publish(topic, payload, qos=1, retain=retained)

    def close(self):
        self.paho.loop_stop()
        self.paho.disconnect()


class Monitor:
    """util.Monitor: the last value and when it came."""

    def __init__(self, timeout):
        self.timeout = timeout
        self.cond = threading.Condition()
        self.value = None
        self.updated = None  # monotonic time; None: nothing yet

    def set(self, value):
        with self.cond:
            self.value, self.updated = value, time.monotonic()
            self.cond.notify_all()

    def get(self):
        with self.cond:
            if not self.timeout:
                if self.updated is None:
                    raise ValueError("outdated")
                return self.value
            if self.updated is None:  # the first read waits once for a first value
                self.cond.wait_for(lambda: self.updated is not None, self.timeout)
                if self.updated is None:
                    raise ValueError("outdated")
            elif time.monotonic() - self.updated > self.timeout:
                raise ValueError("outdated")
            return self.value


_KNOWN_ERRORS = ("ErrAsleep", "ErrMustRetry", "ErrNotAvailable")

# plugin/mqtt.go's keys (with mqtt.Config and pipeline.Settings squashed in), and the
# emulated ones.
_MQTT_KEYS = {"broker", "user", "password", "clientid", "insecure", "cacert", "clientcert",
              "clientkey", "topic", "payload", "retained", "scale", "timeout", "allowempty",
              "quote", "regex", "default", "jq", "unpack", "decode"}
_MQTT_EMULATED = {"topic", "payload", "retained", "scale", "timeout", "jq"}
_WATCHDOG_KEYS = {"reset", "initial", "set", "timeout", "defer"}
_WATCHDOG_EMULATED = {"set", "timeout"}


class MqttPlugin:
    def __init__(self, cfg, evcc):
        c = _decode(cfg, _MQTT_KEYS, _MQTT_EMULATED, "mqtt")
        if "topic" not in c:
            raise ConfigError("mqtt: missing topic")
        if evcc.client is None:
            raise ConfigError("mqtt: no broker")
        self.client = evcc.client
        self.topic = c["topic"]
        self.payload = c.get("payload") or ""
        self.retained = bool(c.get("retained", False))
        self.scale = float(c.get("scale", 1))
        self.timeout = go_duration(c["timeout"]) if "timeout" in c else 0
        self.jq = jq.compile(c["jq"]) if c.get("jq") else None
        self.sent = evcc.sent

    # -- reading
    def string_getter(self):
        monitor = Monitor(self.timeout)
        self.client.listen(self.topic, monitor.set)

        def get():
            payload = monitor.get()
            if payload in _KNOWN_ERRORS:
                raise ValueError(payload)
            if self.jq is None:
                return payload
            results = self.jq.input_text(payload).all()
            if not results:
                raise ValueError("jq: empty result")
            if len(results) > 1:
                raise ValueError("jq: too many results")
            return go_value(results[0])
        return get

    def float_getter(self):
        get = self.string_getter()

        def value():
            text = get()
            f = float(text)  # strconv.ParseFloat accepts what Go's %v wrote
            if f != f or f in (float("inf"), float("-inf")):
                raise ValueError("invalid float value: %s" % text)
            return f * self.scale
        return value

    def bool_getter(self):
        get = self.string_getter()

        def value():
            # cast.ToBoolE on a string: strconv.ParseBool
            text = get()
            if text in ("1", "t", "T", "TRUE", "true", "True"):
                return True
            if text in ("0", "f", "F", "FALSE", "false", "False"):
                return False
            raise ValueError("unable to cast %r to bool" % text)
        return value

    # -- writing
    def setter(self, param):
        def write(value):
            payload = set_formatted_value(self.payload, param, value)
            self.sent.append((time.monotonic(), self.topic, payload))
            self.client.publish(self.topic, self.retained, payload)
        return write


# plugin/http.go's keys (pipeline.Settings squashed in), and the emulated ones.
_HTTP_KEYS = {"uri", "method", "headers", "body", "scale", "insecure", "auth", "timeout",
              "cache", "regex", "default", "jq", "unpack", "decode", "quote"}
_HTTP_EMULATED = {"uri", "method", "headers", "body", "scale", "timeout", "jq"}


class HttpPlugin:
    def __init__(self, cfg, evcc):
        c = _decode(cfg, _HTTP_KEYS, _HTTP_EMULATED, "http")
        if not c.get("uri"):
            raise ConfigError("http: missing uri")
        self.uri = evcc.rewrite(c["uri"])
        self.method = str(c.get("method") or "GET").upper()
        self.headers = {str(k): str(v) for k, v in (c.get("headers") or {}).items()}
        self.body = c.get("body") or ""
        if self.body and self.method == "GET":  # WithBody
            self.method = "POST"
        self.scale = float(c.get("scale", 1))
        self.timeout = go_duration(c["timeout"]) if "timeout" in c else 10.0
        self.jq = jq.compile(c["jq"]) if c.get("jq") else None
        self.sent = evcc.sent

    def request(self, uri, body):
        # request(): the body only with a method other than GET; DoBody: an answer other
        # than 2xx is an error. Every exchange is kept for the test: (time, uri, body,
        # status, answer).
        data = body.encode() if self.method != "GET" else None
        req = urllib.request.Request(uri, data=data, method=self.method, headers=self.headers)
        entry = [time.monotonic(), uri, body, None, None]
        self.sent.append(entry)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                entry[3], raw = r.status, r.read()
        except urllib.error.HTTPError as e:
            entry[3], raw = e.code, e.read()
        entry[4] = raw.decode("utf-8", errors="replace")
        if not 200 <= entry[3] < 300:
            raise ValueError("unexpected status: %d (%s)" % (entry[3], entry[4][:200]))
        return entry[4]

    # -- reading
    def string_getter(self):
        def get():
            payload = self.request(set_formatted_value(self.uri, "", ""), self.body)
            if payload in _KNOWN_ERRORS:
                raise ValueError(payload)
            if self.jq is None:
                return payload
            results = self.jq.input_text(payload).all()
            if not results:
                raise ValueError("jq: empty result")
            if len(results) > 1:
                raise ValueError("jq: too many results")
            return go_value(results[0])
        return get

    float_getter = MqttPlugin.float_getter
    bool_getter = MqttPlugin.bool_getter

    # -- writing
    def setter(self, param):
        def write(value):
            self.request(set_formatted_value(self.uri, param, value),
                         set_formatted_value(self.body, param, value))
        return write


class WatchdogPlugin:
    """plugin/watchdog.go without `reset`, `initial` and `defer`."""

    def __init__(self, cfg, evcc):
        c = _decode(cfg, _WATCHDOG_KEYS, _WATCHDOG_EMULATED, "watchdog")
        if "set" not in c or "timeout" not in c:
            raise ConfigError("watchdog: needs set and timeout")
        self.inner = make_plugin(c["set"], evcc)
        self.period = go_duration(c["timeout"]) * evcc.time_factor / 2
        self.stopped = evcc.stopped
        self.log = evcc.log
        self.lock = threading.Lock()
        self.last = None
        self.cancel = None  # the running watchdog's stop event

    def setter(self, param):
        write = self.inner.setter(param)

        def wdt(val, cancel):
            # time.Tick(timeout / 2): the first repetition one period after the write
            while not cancel.wait(self.period):
                with self.lock:
                    if cancel.is_set() or self.stopped.is_set():
                        return
                    try:
                        write(val)
                    except Exception as e:  # the watchdog logs it and goes on
                        self.log("ERROR", "watchdog: %r" % e)

        def set_value(val):
            with self.lock:
                if self.last == val and self.cancel is not None:
                    return  # unchanged: the running watchdog goes on repeating it
                if self.cancel is not None:
                    self.cancel.set()
                    self.cancel = None
                write(val)
                self.last = val
                self.cancel = threading.Event()
                threading.Thread(target=wdt, args=(val, self.cancel), daemon=True).start()
        return set_value


_PLUGINS = {"mqtt": MqttPlugin, "http": HttpPlugin, "watchdog": WatchdogPlugin}


def make_plugin(cfg, evcc):
    if not isinstance(cfg, dict) or "source" not in cfg:
        raise ConfigError("missing plugin source in %r" % (cfg,))
    cfg = dict(cfg)
    source = cfg.pop("source")
    if source not in _PLUGINS:
        raise ConfigError("plugin %r is not emulated" % source)
    return _PLUGINS[source](cfg, evcc)


# --- the custom charger and the loadpoint -------------------------------------------------

_CHARGER_KEYS = {"name", "type", "status", "enabled", "enable", "maxcurrent", "power",
                 "energy", "returnenergy", "maxcurrentmillis", "identify", "phases1p3p",
                 "wakeup", "soc", "limitsoc", "finishtime", "tos", "temp", "limittemp",
                 "currents", "voltages", "powers", "features", "icon"}
_CHARGER_EMULATED = {"name", "type", "status", "enabled", "enable", "maxcurrent", "power",
                     "energy", "phases1p3p", "tos"}


class ChargeStatusError(ValueError):
    pass


def charge_status(text):
    """api.ChargeStatusString."""
    s = text.strip("\x00 ").upper()
    if not s:
        raise ChargeStatusError("invalid status: %s" % text)
    first = s[0]
    if first in "AB":
        return first
    if first in "CD":
        return "B" if s in ("C1", "D1") else "C"
    raise ChargeStatusError("invalid status: %s" % (s if first in "EF" else text))


class CustomCharger:
    """charger/charger.go NewConfigurableFromConfig."""

    def __init__(self, cfg, evcc):
        c = _decode(cfg, _CHARGER_KEYS, _CHARGER_EMULATED, "charger")
        if c.get("type") != "custom":
            raise ConfigError("charger type must be custom")
        for needed in ("status", "enabled", "enable", "maxcurrent"):
            if needed not in c:
                raise ConfigError("charger: %s is required" % needed)
        self.name = c.get("name")
        self._status = make_plugin(c["status"], evcc).string_getter()
        self._enabled = make_plugin(c["enabled"], evcc).bool_getter()
        self._enable = make_plugin(c["enable"], evcc).setter("enable")
        self._max_current = make_plugin(c["maxcurrent"], evcc).setter("maxcurrent")
        self._power = make_plugin(c["power"], evcc).float_getter() if "power" in c else None
        self._energy = make_plugin(c["energy"], evcc).float_getter() if "energy" in c else None
        self._phases1p3p = None
        if "phases1p3p" in c:
            if not c.get("tos"):
                raise ConfigError("1p3p does no longer handle disable/enable. Use tos: true to "
                                  "confirm you understand the consequences")
            self._phases1p3p = make_plugin(c["phases1p3p"], evcc).setter("phases")

    def status(self):
        return charge_status(self._status())

    def enabled(self):
        return self._enabled()

    def enable(self, on):
        self._enable(bool(on))

    def max_current(self, amps):
        self._max_current(int(amps))

    def phases1p3p(self, phases):
        self._phases1p3p(int(phases))

    def power(self):
        return self._power()

    def energy(self):
        return self._energy()


class Loadpoint:
    """The charger-facing half of core/loadpoint.go: Prepare's start-up read, Update()'s
    status read, syncCharger() and setLimit(). `target` stands for evcc's decision (mode,
    PV, plans): the current it wants, 0 to stop."""

    def __init__(self, charger, evcc):
        self.charger = charger
        self.evcc = evcc
        self.status = ""  # api.StatusNone
        self.enabled = False
        self.offered = 0.0
        self.switched = float("-inf")  # chargerSwitched: the zero time
        self.target = 0
        self.phases = 0  # the phases evcc believes the charger uses; 0: unknown
        self.target_phases = None  # evcc's choice of phases (pvScalePhases), None: no switch
        self.seen = []  # (status, enabled as read) per Update, for the test
        self.readings = []  # (power W, energy kWh) per Update

    def consistent(self):
        return time.monotonic() - self.switched > CHARGER_SWITCH_DURATION * self.evcc.time_factor

    def prepare(self):
        # "read initial charger state to prevent immediately disabling charger"
        try:
            self.enabled = self.charger.enabled()
        except ValueError as e:
            self.evcc.log("ERROR", "charger enabled: %s" % e)
            return
        if self.enabled:
            self.set_limit(MIN_CURRENT)

    def update(self):
        # The site reads the charge meter before the loadpoint's Update.
        if self.charger._power is not None:
            try:
                reading = (self.charger.power(),
                           self.charger.energy() if self.charger._energy else None)
                self.readings.append(reading)
            except ValueError as e:
                self.evcc.log("ERROR", "charge meter: %s" % e)
        try:
            status = self.charger.status()
        except ValueError as e:
            self.evcc.log("ERROR", "charger status: %s" % e)
            self.seen.append(("error", None))
            return
        self.status = status
        try:
            enabled = self.sync_charger()
        except ValueError as e:
            self.evcc.log("ERROR", "charger enabled: %s" % e)
            return
        self.seen.append((status, enabled))
        if not self.connected():
            self.set_limit(0)  # "always disable charger if not connected"
        else:
            if self.target_phases and self.charger._phases1p3p is not None:
                self.scale_phases(self.target_phases)
            self.set_limit(self.target)

    def connected(self):
        return self.status in ("B", "C")

    def sync_charger(self):
        enabled = self.charger.enabled()
        read = enabled
        consistent = self.consistent()
        try:
            if not enabled and self.status == "C":
                self.evcc.log("WARN", "charger logic error: disabled but charging")
                enabled = True
                if consistent:
                    self.charger.enable(True)
                    return read
            if enabled and self.enabled:
                pass  # no CurrentGetter and no phase currents in this recipe: nothing to sync
            elif enabled == self.enabled:
                pass
            elif consistent and (enabled or self.connected()):
                self.evcc.log("WARN", "charger out of sync: expected %s, got %s" % (
                    "enabled" if self.enabled else "disabled",
                    "enabled" if enabled else "disabled"))
            return read
        finally:
            if consistent:
                self.enabled = enabled  # setAndPublishEnabled, deferred

    def scale_phases(self, phases):
        # scalePhases: the charger switches by itself (tos); evcc only remembers the phases.
        if self.phases != phases:
            self.charger.phases1p3p(phases)
            self.evcc.log("DEBUG", "switched phases: %dp" % phases)
            self.phases = phases

    def set_limit(self, current):
        current = float(int(current))  # coarse current: no maxcurrentmillis, full amps
        if current != self.offered and current >= MIN_CURRENT:
            self.charger.max_current(int(current))
            self.offered = current
        enabled = current >= MIN_CURRENT
        if enabled != self.enabled:
            self.charger.enable(enabled)
            self.enabled = enabled
            self.switched = time.monotonic()
            if not enabled:
                self.offered = 0.0


class _OnePayload:
    """In place of an Evcc for read_once() and write_once(): a client whose every topic holds
    one payload."""

    def __init__(self, payload):
        self.time_factor = 1.0
        self.sent = []
        self.messages = []
        self.stopped = threading.Event()
        payload = payload if isinstance(payload, str) else json.dumps(payload)
        self.client = type("Retained", (), {  # what it publishes stays in `sent`
            "listen": lambda s, topic, cb: cb(payload),
            "publish": lambda s, topic, retained, text: None})()

    def log(self, level, text):
        self.messages.append((level, text))


def write_once(charger_config, setter, value):
    """What evcc publishes through one of the charger's setters, given its config key
    (`phases1p3p`, `maxcurrent`, `enable`), with no broker: (topic, payload)."""
    evcc = _OnePayload("")
    charger = CustomCharger(charger_config, evcc)
    {"phases1p3p": charger.phases1p3p, "maxcurrent": charger.max_current,
     "enable": charger.enable}[setter](value)
    _, topic, payload = evcc.sent[-1]
    return topic, payload


def read_once(charger_config, payload):
    """What evcc reads from one state report through the charger's getters (no broker):
    (status or the error text, enabled, power W, energy kWh)."""
    charger = CustomCharger(charger_config, _OnePayload(payload))
    try:
        status = charger.status()
    except ValueError as e:
        status = "error: %s" % e
    return status, charger.enabled(), charger.power(), charger.energy()


class Evcc:
    """An evcc with one loadpoint on the recipe's charger, its loop in a thread. `broker`:
    its MQTT connection's (None: no mqtt plugin may be used); `rewrite(uri)`: an http
    plugin's address as the test reaches the charger (the recipe's own host and port)."""

    def __init__(self, config, broker, time_factor=1.0, rewrite=None):
        self.config = config
        self.time_factor = time_factor
        self.interval = go_duration(config.get("interval", "30s")) * time_factor
        self.stopped = threading.Event()
        # Of every request: (monotonic time, topic, payload) published over MQTT, or
        # [monotonic time, uri, body, status, answer] sent over HTTP.
        self.sent = []
        self.messages = []  # (level, text): evcc's log
        self.rewrite = rewrite or (lambda uri: uri)
        self.client = Client(broker) if broker else None
        chargers = config.get("chargers") or []
        loadpoints = config.get("loadpoints") or []
        if len(chargers) != 1 or len(loadpoints) != 1:
            raise ConfigError("the recipe has one charger and one loadpoint")
        if loadpoints[0].get("charger") != chargers[0].get("name"):
            raise ConfigError("the loadpoint's charger %r is not the charger %r" % (
                loadpoints[0].get("charger"), chargers[0].get("name")))
        self.charger = CustomCharger(chargers[0], self)
        self.loadpoint = Loadpoint(self.charger, self)
        self.thread = threading.Thread(target=self._run, daemon=True)

    def log(self, level, text):
        self.messages.append((level, text))

    def start(self):
        self.loadpoint.prepare()
        self.thread.start()
        return self

    def _run(self):
        next_at = time.monotonic()
        while not self.stopped.is_set():
            try:
                self.loadpoint.update()
            except ConfigError as e:  # the recipe uses what this emulation cannot play
                self.log("FATAL", str(e))
                return
            except Exception as e:  # evcc logs a failed update and tries again next time
                self.log("ERROR", "update: %r" % e)
            next_at += self.interval
            self.stopped.wait(max(0.0, next_at - time.monotonic()))

    def updates(self):
        return len(self.loadpoint.seen)

    def die(self):
        """evcc's process ends: its loop and watchdogs stop, its connection drops."""
        self.stopped.set()
        self.thread.join(5)
        if self.client:
            self.client.close()
