# The MQTT uplink (docs/protocol.md): the uplink, its client on umqtt.simple, Home Assistant
# discovery. Frozen flat: each module keeps its global name.
for name in ("mqtt_uplink", "mqtt_client", "discovery"):
    module(name + ".py")
