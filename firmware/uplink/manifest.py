# What every uplink shares (docs/uplinks.md): the runner (the threads, and the uplinks the
# config names), the door (the one reconnect loop), the TLS check, webhooks, and the
# updater (an update any uplink starts, docs/ota.md). Frozen flat: each module keeps its
# global name.
for name in ("runner", "door", "trust", "webhook", "updater", "update_job"):
    module(name + ".py")
