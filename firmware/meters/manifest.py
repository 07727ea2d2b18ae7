# Modbus RTU meters (docs/meters.md), frozen flat: the module names stay global.
for name in ("modbus_rtu.py", "meter_models.py", "meter_poll.py"):
    module(name)
