"""A bench with the firmware on it, stepped in virtual time.

InProcessRig runs the firmware in this CPython process (fast unit tests); ProcessRig runs it
under the micropython binary and talks to it over the simulated board's link, so the real
interpreter is exercised. Both expose the same calls, so one scenario suite runs on both.
"""
import io
import json

from tools.paths import cpython_paths

from .agent_process import AgentProcess
from .bench import Bench

cpython_paths()
import ota_boot  # noqa: E402
import runner  # noqa: E402
import sim_board  # noqa: E402
import topics  # noqa: E402
from sim_link import INPUTS  # noqa: E402
from sim_main import RESTART_EXIT  # noqa: E402

TICK_MS = sim_board.Board.TICK_MS
OFF = (0, False, False)  # the outputs of a board without power
UNIX_BASE_MS = 1795478400000  # 2026-11-24T00:00:00Z at bench time 0


def text(payload):
    """A published payload's bytes: as they are, or a body that writes itself
    (api_text.JsonBody: every reply and state report) written out."""
    if hasattr(payload, "write_to"):
        out = io.BytesIO()
        payload.write_to(out)
        return out.getvalue()
    return bytes(payload)


class Rig:
    """Bench stepping shared by both rigs; subclasses run the firmware's tick."""

    def __init__(self, state_dir, voltage=230, phases=1, max_current=32, device_id="charger-1",
                 cable_current=None, default_kw=None, metered=True, site=None,
                 clock_ms=UNIX_BASE_MS, phase_switch=False, ota=None, meters=None,
                 meter_period_ms=None, uplinks=None):
        """ota: updates over the air, {"keys": [...]} (docs/ota.md); meters: {"ev": model,
        "mains": model}, the Modbus meters on the board's bus (the bench's pymodbus peers);
        the mains meter reads `household` (A per site phase) plus this charger's own draw on
        its site phases."""
        self.state_dir = state_dir
        # The board's wall clock: Unix ms at bench time 0, or None for a board whose clock
        # was never set (an ESP32 whose NTP failed). A site's chargers may each differ.
        self.clock_ms = clock_ms
        self.config = {"device_id": device_id, "supply_voltage": voltage, "phases": phases,
                       "max_current": max_current, "state_dir": state_dir, "meter": metered}
        if site:
            self.config["site"] = site
        if ota:
            self.config["ota"] = ota
        if cable_current:
            self.config["cable_current"] = cable_current
        if default_kw is not None:
            self.config["default_max_charge_rate"] = default_kw
        if uplinks:  # config.uplinks' names (MQTT where none are given); a ProcessRig's
            # sim_main.py then runs them, in threads, from the config's blocks
            self.config["uplinks"] = uplinks
        if phase_switch:
            self.config["phase_switch"] = True
        self.bench = Bench(voltage=voltage, phases=phases, phase_switch=phase_switch,
                           meters=meters)
        self.config.update(self.bench.meters_config())
        if meter_period_ms:
            self.config["meters"]["period_ms"] = meter_period_ms
        self.household = [0.0, 0.0, 0.0]
        self.bench.mains_currents = self._mains_currents
        self.prefix = topics.base(None, device_id)
        self.published = []  # (topic, payload dict or str, retain)
        self.on_publish = None  # f(topic, payload bytes, retain): a site's bus (site_rig.py)
        self.powered = False
        self.restarts = 0  # the board restarted itself (an update, a reset, a crash at boot)

    def _mains_currents(self):
        out = list(self.household)
        amps = self.bench.phase_currents()
        for i, p in enumerate(self.config.get("site", {}).get("phases", [1])):
            out[p - 1] += amps[i]
        return out

    # -- scenario calls
    def run(self, ms):
        for _ in range(max(1, ms // TICK_MS)):
            self.step()

    def run_until(self, predicate, limit_ms):
        start = self.bench.t
        while not predicate():
            if self.bench.t - start > limit_ms:
                raise AssertionError("condition not met within %d ms" % limit_ms)
            self.step()
        return self.bench.t - start

    def step(self):
        b = self.bench
        b.step(TICK_MS)
        if not self.powered:
            b.apply_outputs(OFF)  # no supply: no pilot voltage, contactors fall open
            return
        b.apply_outputs(self._tick(b.t, b.board_inputs()))

    def ev(self, **fields):
        self.bench.set_ev(fields)

    def fault(self, name):
        self.bench.set_fault(name)

    def request(self, kind, payload):
        if not isinstance(payload, (bytes, bytearray)):
            payload = json.dumps(payload).encode()
        return json.loads(self._request(kind, bytes(payload)))

    def settings(self, **kw):
        body = {k: {"value": v, "unit": "kw"} for k, v in kw.items()}
        return self.request("settings", {"requestId": "s", "settings": body})

    def command(self, name, **extra):
        body = {"requestId": "c", "action": {"command": name}}
        body.update(extra)
        return self.request("commands", body)

    def read(self):
        return self.request("read", {"requestId": "r"})["data"]

    def events(self, kind=None):
        return [p for t, p, _ in self.published
                if t == self.prefix + topics.EVENTS and (kind is None or p["type"] == kind)]

    def last_state(self):
        for t, p, _ in reversed(self.published):
            if t == self.prefix + topics.STATE:
                return p
        return None

    def deliver(self, topic, payload):
        """A message on a topic the agent subscribes to beyond its own (a site's)."""
        if self.powered:
            self._deliver(topic, bytes(payload))

    def _record(self, topic, payload, retain):
        payload = text(payload)
        if self.on_publish:
            self.on_publish(topic, bytes(payload), retain)
        try:
            payload = json.loads(payload)
        except ValueError:
            payload = bytes(payload).decode()
        self.published.append((topic, payload, retain))


class InProcessRig(Rig):
    """The firmware as CPython modules, called directly; storage via `store_factory`."""

    def __init__(self, state_dir, store_factory=None, **kw):
        super().__init__(state_dir, **kw)
        self.store_factory = store_factory
        self.boot()

    def boot(self):
        from agent import Agent
        # sim_main's boot layer, but for the path: this process runs its own modules.
        ota_boot.app_path(self.state_dir)
        store = self.store_factory() if self.store_factory else sim_board.FileStore(self.state_dir)
        self.board = sim_board.Board(dict(self.config), store)
        self.board.publish = lambda topic, payload, retain=False: self._record(
            self.prefix + topic, payload, retain)
        self.board.publish_to = lambda topic, payload, retain=False, qos=1: self._record(
            topic, payload, retain)
        self.board.unix_base_ms = self.clock_ms
        self.board.now = self.bench.t
        self.powered = True
        self.bench.apply_outputs(self._outputs())
        self.agent = Agent(self.board)
        self.loop = runner.Lockstep(self.agent, self.board)  # the firmware's own loop
        self.bench.apply_outputs(self._outputs())

    def _outputs(self):
        bd = self.board
        return bd.pilot_counts, bd.contactor_drive, bd.phase_drive

    def power_cut(self):
        self.powered = False
        self.agent = self.board = self.loop = None

    def factory_reset(self):
        self.board.reset_requested = True
        self.pump()

    def _tick(self, now, inputs):
        if self.board.restarting:  # it restarted itself (a thread of its asked): power on
            self.restarts += 1
            self.boot()
        bd = self.board
        for name, value in zip(INPUTS, inputs):
            setattr(bd, name, value)
        self.loop.step(now)
        return self._outputs()

    def pump(self, now=None):
        self.run(runner.SERVICE_TICKS * TICK_MS)

    def _deliver(self, topic, payload):
        self.loop.on_message(topic, payload)

    def _request(self, kind, payload):
        before = len(self.published)
        self.loop.on_request(kind, payload)
        for topic, body, _ in self.published[before:]:
            if topic == self.prefix + topics.RESPONSES:
                return json.dumps(body).encode() if not isinstance(body, str) else body
        raise RuntimeError("no reply to %s request" % kind)

    def close(self):
        self.bench.close()


class ProcessRig(Rig):
    """The firmware under micropython: `build` is one of tools.paths.BUILDS."""

    def __init__(self, state_dir, build="wheel", heapsize="256K", **kw):
        super().__init__(state_dir, **kw)
        self.build = build
        self.heapsize = heapsize
        self.agent = None
        self.boot()

    def boot(self):
        self.agent = AgentProcess(self.config, self.build, self.clock_ms, self.heapsize,
                                  on_publish=self._record)
        self.restarts += self.agent.resets  # it reset at boot (a version failing at import)
        self.powered = True
        self.bench.apply_outputs(self.agent.outputs)

    def _tick(self, now, inputs):
        try:
            return self.agent.tick(inputs)
        except RuntimeError:
            if self.agent.exit_status() != RESTART_EXIT:
                raise
        self.restarts += 1  # it restarted itself: a board comes back on after its reset
        self.boot()
        return self.agent.outputs

    def _request(self, kind, payload):
        # The reply comes during the next exchange: step one tick to collect it.
        self.agent.send_request(kind, payload)
        before = len(self.published)
        self.step()
        for topic, body, _ in self.published[before:]:
            if topic == self.prefix + topics.RESPONSES:
                return json.dumps(body).encode() if not isinstance(body, str) else body
        raise RuntimeError("no reply to %s request" % kind)

    def _deliver(self, topic, payload):
        self.agent.send_message(topic, payload)

    def send_nowait(self, kind, payload):
        """Send a request and return at once: for cutting the power mid-request."""
        self.agent.send_request(kind, json.dumps(payload).encode())

    def power_cut(self):
        self.powered = False
        if self.agent:
            self.agent.kill()
        self.agent = None

    def pump(self, now=None):
        self.run(runner.SERVICE_TICKS * TICK_MS)

    def factory_reset(self):
        self.agent.factory_reset()
        self.pump()

    def close(self):
        self.power_cut()
        self.bench.close()
