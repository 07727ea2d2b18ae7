# What every uplink shares: the runner (the threads, and the uplinks the config names),
# waiting without the GIL, the TLS check, webhooks (docs/uplinks.md). Frozen flat: each
# module keeps its global name.
for name in ("runner", "door", "nap", "trust", "webhook"):
    module(name + ".py")
