# What every uplink shares (docs/uplinks.md): the runner (the threads, and the uplinks the
# config names), the door (the one reconnect loop), the TLS check, webhooks. Frozen flat:
# each module keeps its global name.
for name in ("runner", "door", "trust", "webhook"):
    module(name + ".py")
