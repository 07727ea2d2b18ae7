# The OCPP 1.6J uplink (docs/ocpp.md): the uplink, the CSMS's operations, the charge point
# (station), its smart charging, charging profiles, configuration keys, the WebSocket
# client. Named ocpp16, not ocpp: a folder named ocpp on a path shadows the ocpp library the
# tests' central system uses. Frozen flat: each module keeps its global name.
for name in ("ocpp_uplink", "ocpp_ops", "ocpp_station", "ocpp_smart", "ocpp_profiles",
             "ocpp_config", "ws_client"):
    module(name + ".py")
