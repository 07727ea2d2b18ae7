# The control core: what runs on the control tick, and the board's time and waiting that
# every thread shares (docs/design.md, "The tree"). Frozen flat: each module keeps its
# global name.
for name in ("pilot", "pilot_port", "control", "phases", "slot", "ring", "ceiling", "nap"):
    module(name + ".py")
