# The control core: what runs on the control tick (docs/design.md). Frozen flat: each module
# keeps its global name.
for name in ("pilot", "pilot_port", "control", "slot", "ring", "ceiling"):
    module(name + ".py")
