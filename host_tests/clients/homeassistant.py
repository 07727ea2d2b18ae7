"""A real Home Assistant Core, headless, for host tests.

    install = ensure_installed(progress=print)   # cached venv, once per machine and pin
    with HomeAssistant(install, broker_port, tmp_dir) as ha:  # onboarded, MQTT on the broker
        ha.wait_for(lambda: ha.state("sensor.x"))
        ha.call_service("switch", "turn_off", {"entity_id": "switch.x"})

A test's session fixture calls `installed_or_skip(request.config)`: it skips with the reason
when the machine cannot have Home Assistant (no CPython 3.13, no package registry) and fails on
any other install problem. Home Assistant reports a discovery payload it rejects only in its log:
`log_problems("homeassistant.components.mqtt")` lists those lines.

What Home Assistant 2025.4.4 does, as measured here (2 cores shared, CPython 3.13.0, 2026-11-24):
- Install, about 820 MB: 93 s cold (empty pip cache; seven packages build from sdist: ciso8601,
  lru-dict, pymicro-vad, pyspeex-noise, PyTurboJPEG, fnvhash, PyRIC); 42-72 s with pip's cache
  warm, 95 s on a busy machine (load 4). With the top-level pins alone it took 149 s, pip
  backtracking through habluetooth and bleak releases: homeassistant-constraints.txt pins the
  whole set. A cache hit costs a hash of the two pin files.
- A run: the HTTP API answers 2.2-2.8 s after `hass` starts, onboarding takes 0.3 s, and the
  MQTT birth message comes at 8.1-8.7 s: Home Assistant holds it until its discovery
  subscriptions are made and a 5 s discovery cooldown has passed. `stop()` takes 0.8-0.9 s.
  Retained discovery configs then become entities within 0.1 s.
- No network at run time: with `--skip-pip` nothing is ever installed, and the default
  integrations it loads anyway (frontend, backup, analytics, network, person, ...) find their
  requirements in the venv. Analytics stays off: onboarding's analytics step is never done.
  strace of a whole run (connect, sendto): TCP only to the broker on 127.0.0.1 (the config
  flow's test connection, then the client); the network integration connect()s UDP sockets to
  8.8.8.8:1 and 224.0.0.251:1 to learn the source address, sending nothing; no DNS queries. The
  only error in the log is camera's "Error loading libturbojpeg" (the C library is not
  installed; harmless).
- `GET /api/onboarding` answers without auth on a fresh config dir; `POST /api/onboarding/users`
  gives an `auth_code`, `/auth/token` a 30-minute access token, exchanged here over the
  WebSocket for a long-lived one. The other onboarding steps are not needed for the API.
- The MQTT config flow (`handler: mqtt`) goes straight to its `broker` step; that form takes
  `broker` and `port`, connects to the broker for real, and creates the entry.
- The registries are WebSocket-only: `config/device_registry/list`, `config/entity_registry/list`.
  MQTT devices carry `identifiers` `[["mqtt", <id from dev.ids>]]`; entity ids are derived from
  the device's and the entity's names (`sensor.ev_charger_power`): find them by unique_id.
- Entities read `unavailable` until the retained `online` arrives on their availability topic;
  `offline` makes them unavailable again.
- A number's whole values reach `command_template` as integers: `{{ value }}` renders `11`, not
  `11.0`; fractional ones as they are (`3.7`).
- `number.set_value` outside the entity's min/max: HTTP 500 from `/api/services`, nothing is
  published.
- A switch with a state topic is not optimistic: it keeps its state after turn_off until the
  state topic says otherwise.
- Rejections are only WARNING lines in Home Assistant's log (see log_problems()):
  * device-based discovery (`homeassistant/device/<id>/config`, components under `cmps`) rejects
    `~` at its top level ("extra keys not allowed @ data['~']"); `~` inside each component works;
    it also requires the origin block `o` ("required key not provided @ data['origin']");
  * per-entity configs accept `~` at the top level; unknown keys are dropped silently;
  * an enum sensor's state outside its `options` is ignored with a warning (state stays unknown);
  * device_class energy with state_class measurement is taken, with a warning;
  * a `dev` block without `name` gives entity ids such as `sensor.none_energy`;
  * without `val_tpl` a sensor shows the whole JSON payload as its state.
"""
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REQUIREMENTS = os.path.join(HERE, "homeassistant-requirements.txt")
CONSTRAINTS = os.path.join(HERE, "homeassistant-constraints.txt")
PYTHON_SERIES = (3, 13)  # what the pinned release installs on
# Outside the clone, so every CI run and worktree on this machine reuses one venv.
CACHE = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
                     "micropython-evse")
VENV = os.path.join(CACHE, "homeassistant")
STAMP = os.path.join(VENV, "installed-from")
INSTALL_LOG = os.path.join(CACHE, "homeassistant-install.log")
INSTALL_TIMEOUT = 15 * 60  # seconds; an install takes 1.5-3 min

# pip's words for "the package index cannot be reached": the only install failure that skips.
_OFFLINE = ("NewConnectionError", "Failed to establish a new connection", "Network is unreachable",
            "Temporary failure in name resolution", "Name or service not known",
            "ConnectTimeoutError", "ProxyError", "No route to host")


class Unavailable(Exception):
    """This machine cannot run Home Assistant (a reason to skip, not a failure)."""


class HomeAssistantError(Exception):
    """Home Assistant answered an API call with an error."""

    def __init__(self, status, body, what):
        super().__init__("%s: HTTP %s %s" % (what, status, body[:500]))
        self.status = status
        self.body = body


# --- the cached venv ---------------------------------------------------------------------

def find_python():
    """CPython 3.13 from pyenv (where this project's machines have it), else on PATH."""
    candidates = []
    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    versions = os.path.join(root, "versions")
    if os.path.isdir(versions):
        for name in sorted(os.listdir(versions), reverse=True):
            if name.startswith("%d.%d." % PYTHON_SERIES):
                candidates.append(os.path.join(versions, name, "bin", "python3"))
    found = shutil.which("python%d.%d" % PYTHON_SERIES)
    if found:
        candidates.append(found)
    for exe in candidates:
        if not os.access(exe, os.X_OK):
            continue
        out = subprocess.run([exe, "-c", "import sys, venv; print(*sys.version_info[:3])"],
                             capture_output=True, text=True)
        if out.returncode == 0 and tuple(map(int, out.stdout.split()[:2])) == PYTHON_SERIES:
            return exe, out.stdout.strip().replace(" ", ".")
    raise Unavailable("Home Assistant %s needs CPython %d.%d, not found (pyenv or PATH)"
                      % (_pinned_version(), *PYTHON_SERIES))


def _pinned_version():
    with open(REQUIREMENTS) as f:
        for line in f:
            if line.startswith("homeassistant=="):
                return line.split("==")[1].strip()
    raise RuntimeError("no homeassistant pin in %s" % REQUIREMENTS)


def _wanted_stamp(python_version):
    h = hashlib.sha256(python_version.encode())
    for path in (REQUIREMENTS, CONSTRAINTS):
        with open(path, "rb") as f:
            h.update(f.read())
    return h.hexdigest()


class Installation:
    """The venv, held with a shared lock until this process exits, so that no other process
    reinstalls it meanwhile (a changed pin in another checkout waits for us)."""

    def __init__(self, venv, lock):
        self.venv = venv
        self.hass = os.path.join(venv, "bin", "hass")
        self._lock = lock


_installed = None  # this process's Installation or Unavailable: one check per process


def ensure_installed(progress=print):
    """The cached Home Assistant venv, installed or reinstalled if its stamp is not the pins'.

    Raises Unavailable when this machine cannot have it; any other install failure raises
    RuntimeError with the end of pip's log.
    """
    global _installed
    if _installed is None:
        try:
            _installed = _ensure_installed(progress)
        except Unavailable as e:
            _installed = e
    if isinstance(_installed, Unavailable):
        raise _installed
    return _installed


def _ensure_installed(progress):
    python, version = find_python()
    wanted = _wanted_stamp(version)
    os.makedirs(CACHE, exist_ok=True)
    lock = open(os.path.join(CACHE, "homeassistant.lock"), "a+")
    try:
        # Users share the lock; an install holds it alone (and waits for every user to finish).
        _flock(lock, fcntl.LOCK_SH, progress, "another process's install")
        if _stamp() != wanted:
            _flock(lock, fcntl.LOCK_EX, progress, "other test processes that use " + VENV)
            if _stamp() != wanted:  # unless a process installed it while we waited
                _install(python, version, wanted, progress)
            fcntl.flock(lock, fcntl.LOCK_SH)
    except BaseException:
        lock.close()
        raise
    return Installation(VENV, lock)


def _flock(lock, mode, progress, holder):
    try:
        fcntl.flock(lock, mode | fcntl.LOCK_NB)
    except BlockingIOError:
        progress("homeassistant: waiting for %s" % holder)
        fcntl.flock(lock, mode)


def _stamp():
    try:
        with open(STAMP) as f:
            return f.read().strip()
    except OSError:
        return None


def _install(python, version, stamp, progress):
    started = time.monotonic()
    progress("homeassistant: installing Home Assistant %s on Python %s into %s "
             "(once per machine and pin; 1.5-3 min, 820 MB)" % (_pinned_version(), version, VENV))
    shutil.rmtree(VENV, ignore_errors=True)  # a half-made or stale venv is never reused
    subprocess.run([python, "-m", "venv", VENV], check=True)
    pip = [os.path.join(VENV, "bin", "python"), "-m", "pip", "install",
           "--disable-pip-version-check", "--progress-bar", "off", "-r", REQUIREMENTS]
    collected = 0
    with open(INSTALL_LOG, "w") as log:
        proc = subprocess.Popen(pip, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        # A registry that stalls must not hold a CI run until its own time limit.
        watchdog = threading.Timer(INSTALL_TIMEOUT, proc.kill)
        watchdog.start()
        for line in proc.stdout:
            log.write(line)
            if line.startswith("Collecting "):
                collected += 1
                if collected % 20 == 0:
                    progress("homeassistant: %d packages resolved (%.0f s)"
                             % (collected, time.monotonic() - started))
            elif line.startswith(("Building wheels for", "Installing collected packages")):
                progress("homeassistant: %s (%.0f s)"
                         % (line.split(":")[0].strip(), time.monotonic() - started))
        code = proc.wait()
        watchdog.cancel()
    if code != 0 and time.monotonic() - started > INSTALL_TIMEOUT:
        raise RuntimeError("pip did not finish installing Home Assistant in %d s; see %s"
                           % (INSTALL_TIMEOUT, INSTALL_LOG))
    if code != 0:
        with open(INSTALL_LOG) as f:
            text = f.read()
        if any(word in text for word in _OFFLINE):
            raise Unavailable("Home Assistant could not be installed: the package registry is "
                              "unreachable (pip's log: %s)" % INSTALL_LOG)
        raise RuntimeError("pip failed to install Home Assistant (exit %d); the end of %s:\n%s"
                           % (code, INSTALL_LOG, text[-3000:]))
    out = subprocess.run([os.path.join(VENV, "bin", "hass"), "--version"],
                         capture_output=True, text=True)
    if out.stdout.strip() != _pinned_version():
        raise RuntimeError("installed hass says %r" % (out.stdout + out.stderr))
    with open(STAMP, "w") as f:  # last: only a complete install carries the stamp
        f.write(stamp + "\n")
    progress("homeassistant: installed in %.0f s" % (time.monotonic() - started))


# --- a running Home Assistant ------------------------------------------------------------

CONFIGURATION = """\
homeassistant:
  name: Host tests
  latitude: 52.52
  longitude: 13.40
  elevation: 0
  unit_system: metric
  time_zone: UTC
  currency: EUR
  country: DE
  internal_url: "http://127.0.0.1:{port}"
http:
  server_host: 127.0.0.1
  server_port: {port}
api:
config:
logger:
  default: warning
  logs:
    homeassistant.bootstrap: info
    homeassistant.components.mqtt: debug
"""

CLIENT_ID = "http://127.0.0.1/"  # onboarding's OAuth client: any URL, the same in both calls


class HomeAssistant:
    """`hass` on a fresh config dir, bound to 127.0.0.1, onboarded, with MQTT on the broker.

    Everything it starts, stop() ends; the log stays at `log_path` for a failing test.
    """

    def __init__(self, installation, broker_port, config_dir, broker_host="127.0.0.1",
                 discovery_prefix="homeassistant"):
        from tools.bench.broker import free_port
        self.installation = installation
        self.broker = (broker_host, broker_port)
        self.prefix = discovery_prefix
        self.dir = str(config_dir)
        self.port = free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        self.log_path = os.path.join(self.dir, "hass.log")
        self.token = None
        self.proc = None
        self.timings = {}

    def __enter__(self):
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc):
        self.stop()

    # -- life cycle

    def start(self, timeout=120):
        t0 = time.monotonic()
        os.makedirs(self.dir, exist_ok=True)
        with open(os.path.join(self.dir, "configuration.yaml"), "w") as f:
            f.write(CONFIGURATION.format(port=self.port))
        log = open(self.log_path, "ab")
        # --skip-pip: a missing requirement fails loudly in the log instead of being fetched.
        # Own session, so stop() can end it and anything it spawned as one group.
        self.proc = subprocess.Popen(
            [self.installation.hass, "-c", self.dir, "--skip-pip", "--log-no-color"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
        log.close()
        from tools.bench import children
        children.adopt(self, self.stop)  # stopped at exit even if the test run is interrupted
        self.wait_for(lambda: self._answers("/api/onboarding"), timeout, "the HTTP API")
        self.timings["api"] = time.monotonic() - t0
        self._onboard()
        self.timings["onboarded"] = time.monotonic() - t0
        with self._birth_watch() as birth:
            self._add_mqtt()
            self.wait_for(birth.is_set, 60, "Home Assistant's MQTT birth message")
        self.timings["mqtt"] = time.monotonic() - t0
        return self

    def stop(self, timeout=30):
        """SIGTERM (Home Assistant shuts down cleanly), SIGKILL to the group if it hangs."""
        from tools.bench import children
        proc, self.proc = self.proc, None
        children.release(self)
        if proc is None:
            return
        t0 = time.monotonic()
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # anything left in its group
        proc.wait()
        self.timings["stop"] = time.monotonic() - t0

    def log_tail(self, lines=60):
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return "(no log)"

    def log_problems(self, *loggers):
        """The log's WARNING/ERROR/CRITICAL lines from these loggers (prefixes), e.g. the
        discovery payloads Home Assistant rejected: it says so nowhere else."""
        marks = tuple("[%s" % name for name in loggers)
        problems = []
        try:
            with open(self.log_path, errors="replace") as f:
                for line in f:
                    level = line[24:].split(" ", 1)[0]  # after "YYYY-MM-DD HH:MM:SS.mmm "
                    if level in ("WARNING", "ERROR", "CRITICAL") and any(m in line for m in marks):
                        problems.append(line.rstrip())
        except OSError:
            pass
        return problems

    # -- REST

    def request(self, method, path, body=None, form=False, what=None):
        """One API call; JSON in and out. Raises HomeAssistantError on an HTTP error."""
        headers = {}
        data = None
        if self.token:
            headers["Authorization"] = "Bearer " + self.token
        if body is not None:
            if form:
                data = urllib.parse.urlencode(body).encode()
                headers["Content-Type"] = "application/x-www-form-urlencoded"
            else:
                data = json.dumps(body).encode()
                headers["Content-Type"] = "application/json"
        req = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                text = resp.read().decode()
        except urllib.error.HTTPError as e:
            raise HomeAssistantError(e.code, e.read().decode(errors="replace"),
                                     what or "%s %s" % (method, path)) from None
        return json.loads(text) if text else None

    def _answers(self, path):
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError("hass exited with %s; the end of %s:\n%s"
                               % (self.proc.returncode, self.log_path, self.log_tail()))
        try:
            self.request("GET", path)
            return True
        except (OSError, HomeAssistantError):
            return False

    def _onboard(self):
        user = self.request("POST", "/api/onboarding/users", {
            "client_id": CLIENT_ID, "name": "Host tests", "username": "tester",
            "password": "host-tests-only", "language": "en"}, what="onboarding")
        tokens = self.request("POST", "/auth/token", {
            "grant_type": "authorization_code", "code": user["auth_code"],
            "client_id": CLIENT_ID}, form=True, what="the token exchange")
        self.token = tokens["access_token"]
        # The access token lives 30 min; a long-lived one keeps long test sessions working.
        self.token = self.ws("auth/long_lived_access_token", client_name="host tests",
                             lifespan=1)

    def _add_mqtt(self):
        flow = self.request("POST", "/api/config/config_entries/flow",
                            {"handler": "mqtt", "show_advanced_options": False},
                            what="starting the MQTT config flow")
        if flow.get("step_id") != "broker":
            raise RuntimeError("MQTT config flow: expected its broker step, got %r" % flow)
        done = self.request("POST", "/api/config/config_entries/flow/" + flow["flow_id"],
                            {"broker": self.broker[0], "port": self.broker[1]},
                            what="the MQTT broker step")
        if done.get("type") != "create_entry":
            raise RuntimeError("MQTT config flow did not create an entry: %r" % done)
        self.mqtt_entry = done["result"]["entry_id"]

    @contextlib.contextmanager
    def _birth_watch(self):
        """Set once Home Assistant announces itself on the broker: its subscriptions are made."""
        import paho.mqtt.client as mqtt
        subscribed, seen = threading.Event(), threading.Event()
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        client.on_connect = lambda c, *a: c.subscribe(self.prefix + "/status", qos=1)
        client.on_subscribe = lambda *a: subscribed.set()
        client.on_message = lambda c, u, m: m.payload == b"online" and seen.set()
        client.connect(*self.broker)
        client.loop_start()
        try:
            if not subscribed.wait(10):
                raise RuntimeError("could not subscribe to %s/status on the broker" % self.prefix)
            yield seen
        finally:
            client.disconnect()
            client.loop_stop()

    def states(self):
        return self.request("GET", "/api/states")

    def state(self, entity_id):
        """The entity's state object, or None if Home Assistant does not know it."""
        try:
            return self.request("GET", "/api/states/" + entity_id)
        except HomeAssistantError as e:
            if e.status == 404:
                return None
            raise

    def call_service(self, domain, service, data=None):
        """The states that changed while the service ran (HA's REST answer)."""
        return self.request("POST", "/api/services/%s/%s" % (domain, service), data or {},
                            what="service %s.%s" % (domain, service))

    def wait_for(self, predicate, timeout=20, what="the condition"):
        """predicate()'s first truthy value, polled; AssertionError with the log tail if none."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError("Home Assistant: timed out after %s s waiting for %s; "
                                     "the end of %s:\n%s"
                                     % (timeout, what, self.log_path, self.log_tail()))
            time.sleep(0.2)

    # -- WebSocket (registries have no REST API)

    def ws(self, type_, **fields):
        """One WebSocket command's result (a fresh authenticated connection per call)."""
        from websockets.sync.client import connect
        with connect(self.url.replace("http", "ws", 1) + "/api/websocket",
                     open_timeout=10, close_timeout=2) as sock:
            hello = json.loads(sock.recv(10))
            if hello.get("type") != "auth_required":
                raise RuntimeError("WebSocket: unexpected greeting %r" % hello)
            sock.send(json.dumps({"type": "auth", "access_token": self.token}))
            auth = json.loads(sock.recv(10))
            if auth.get("type") != "auth_ok":
                raise RuntimeError("WebSocket: authentication failed: %r" % auth)
            sock.send(json.dumps(dict(fields, id=1, type=type_)))
            reply = json.loads(sock.recv(30))
        if not reply.get("success"):
            raise HomeAssistantError("ws", json.dumps(reply.get("error")), type_)
        return reply["result"]

    def devices(self):
        return self.ws("config/device_registry/list")

    def entities(self):
        return self.ws("config/entity_registry/list")

    def entity_id(self, unique_id, platform="mqtt"):
        """The entity_id Home Assistant gave the entity with this unique_id, or None."""
        for e in self.entities():
            if e["platform"] == platform and e["unique_id"] == unique_id:
                return e["entity_id"]
        return None


# --- for pytest --------------------------------------------------------------------------

def installed_or_skip(config):
    """ensure_installed() for a session fixture: progress on the terminal, a skip if impossible.

    `config` is pytest's config (request.config).
    """
    import pytest
    capture = config.pluginmanager.getplugin("capturemanager")

    printed = []

    def progress(line):
        with capture.global_and_fixture_disabled():
            sys.stderr.write("\n" + line)
            sys.stderr.flush()
        printed.append(line)
    try:
        return ensure_installed(progress)
    except Unavailable as e:
        pytest.skip(str(e))
    finally:
        if printed:  # pytest's progress dots go on below, not after our last line
            with capture.global_and_fixture_disabled():
                sys.stderr.write("\n")
