# Home Assistant MQTT discovery (docs/homeassistant.md): one retained config per entity on
# <prefix>/<component>/<deviceId>/<object>/config, published one at a time on every connect
# and whenever Home Assistant's birth message says `online`. States come from the retained
# state topic through value templates; commands go to the request topics through command
# templates that build the same JSON requests any client sends (with a requestId, so they
# are answered and acted on like any other request).
import gc
import json
from actions import STRATEGY
from control import STATUS_NAMES
from settings import KW_MAX, KW_MIN, MODES
import topics

# (object, component, name, device_class, unit, state_class, category, value template).
# Written out whole, not built from shared pieces: a tuple of constants stays in flash
# when the agent is frozen, while strings joined at import would be built in RAM.
_ENTITIES = (
    ("status", "sensor", "Status", "enum", None, None, None,
     "{{ value_json.data.state.status }}"),
    ("power", "sensor", "Power", "power", "W", "measurement", None,
     "{{ value_json.data.state.currentPower * 1000 | round(0) }}"),
    ("session_energy", "sensor", "Session energy", "energy", "kWh", "total", None,
     "{{ value_json.data.state.sessionEnergy }}"),
    ("energy", "sensor", "Energy", "energy", "kWh", "total_increasing", None,
     "{{ value_json.data.state.lifetimeEnergy }}"),
    ("offered_current", "sensor", "Offered current", "current", "A", "measurement", None,
     "{{ value_json.data.state.offeredCurrent }}"),
    ("limited_by", "sensor", "Limited by", None, None, None, "diagnostic",
     "{{ value_json.data.state.limitedBy or 'none' }}"),
    ("fault", "sensor", "Fault", None, None, None, "diagnostic",
     "{{ value_json.data.state.fault or 'none' }}"),
    ("plug", "binary_sensor", "Plug", "plug", None, None, None,
     "{{ 'ON' if value_json.data.state.isConnected else 'OFF' }}"),
    ("charging", "switch", "Charging", None, None, None, None,
     "{{ 'OFF' if value_json.data.state.status == 'idle' else 'ON' }}"),
    ("max_charge_rate", "number", "Max charge rate", "power", "kW", None, None,
     "{{ value_json.data.settings.max_charge_rate.value }}"),
    ("failsafe_charge_rate", "number", "Failsafe charge rate", "power", "kW", None, "config",
     "{{ value_json.data.settings.failsafe_charge_rate.value }}"),
)
# Where the config has phase_switch (one phase or three, docs/meters.md): the mode as a
# select, and the phases in use.
_PHASE_ENTITIES = (
    ("phases_mode", "select", "Phases", None, None, None, None,
     "{{ value_json.data.settings.phases_mode.value }}"),
    ("phases_in_use", "sensor", "Phases in use", None, None, None, None,
     "{{ value_json.data.state.phasesInUse }}"),
)
# (object, command topic, command template). Each template builds a request with a requestId
# ("ha-" and the time): docs/protocol.md refuses requests without one. "%s" is the conflict
# strategy (actions.STRATEGY), put in as the config is built, so this too stays in flash.
_COMMANDS = (
    ("charging", "~/commands", '{"requestId":"ha-{{ now().timestamp() }}","action":{"command":'
     '"{{ \'charge\' if value == \'ON\' else \'idle\' }}"},"onConflict":"%s"}'),
    ("max_charge_rate", "~/settings", '{"requestId":"ha-{{ now().timestamp() }}","settings":'
     '{"max_charge_rate":{"value":{{ value }},"unit":"kw"}}}'),
    ("failsafe_charge_rate", "~/settings", '{"requestId":"ha-{{ now().timestamp() }}",'
     '"settings":{"failsafe_charge_rate":{"value":{{ value }},"unit":"kw"}}}'),
    # A select's value is its option's text: "auto" stays a string, "1" and "3" numbers.
    ("phases_mode", "~/settings", '{"requestId":"ha-{{ now().timestamp() }}","settings":'
     '{"phases_mode":{"value":{{ \'"auto"\' if value == \'auto\' else value }},'
     '"unit":"phases"}}}'),
)


class Discovery:
    def __init__(self, cfg, base, model, version):
        self.prefix = cfg.get("discovery_prefix") or "homeassistant"
        self.device_id = cfg["device_id"]
        self.base = base[:-1]  # "ev-charger/charger-1"
        self.model = model
        self.version = version
        self.announced = 0  # configs published since boot
        self._pending = False
        self._entities = _ENTITIES + (_PHASE_ENTITIES if cfg.get("phase_switch") else ())

    # -- the MQTT uplink's hooks (mqtt_uplink.py)
    def topics(self):
        return (self.prefix + "/status",)

    def on_message(self, topic, msg):
        # Inside umqtt's callback: only note it, publish from service().
        if topic == self.prefix + "/status" and msg == b"online":
            self._pending = True

    def on_connect(self, publish):
        self.announce(publish)

    def service(self, publish, now):
        if self._pending:
            self._pending = False
            self.announce(publish)

    # -- the configs
    def announce(self, publish):
        for entity in self._entities:
            topic, payload = self.config(entity)
            publish(topic, payload, True)
            self.announced += 1
            gc.collect()  # one config at a time: its few hundred bytes never pile up

    def config(self, entity):
        obj, component, name, dev_class, unit, state_class, category, template = entity
        c = {"~": self.base, "name": name, "uniq_id": self.device_id + "_" + obj,
             "obj_id": self.device_id + "_" + obj, "stat_t": "~/" + topics.STATE,
             "val_tpl": template, "avty_t": "~/" + topics.AVAILABILITY,
             "dev": {"ids": [self.device_id], "name": "EV charger " + self.device_id,
                     "mf": "micropython-evse", "mdl": self.model, "sw": self.version}}
        if dev_class:
            c["dev_cla"] = dev_class
        if unit:
            c["unit_of_meas"] = unit
        if state_class:
            c["stat_cla"] = state_class
        if category:
            c["ent_cat"] = category
        if obj == "status":
            c["ops"] = list(STATUS_NAMES)
        elif component == "select":
            c["ops"] = [str(m) for m in MODES]
        for name, topic, template in _COMMANDS:
            if name == obj:
                c["cmd_t"] = topic
                c["cmd_tpl"] = template % STRATEGY if "%s" in template else template
        if component == "number":
            c.update(min=KW_MIN, max=KW_MAX, step=0.1, mode="box")
        return "%s/%s/%s/%s/config" % (self.prefix, component, self.device_id, obj), \
            json.dumps(c).encode()
