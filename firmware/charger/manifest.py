# The charger's request and storage side, without a network: the agent, the API, settings,
# limits, commands, energy, storage and the installation's config (docs/design.md). Frozen
# flat: each module keeps its global name.
for name in ("agent", "api", "api_text", "settings", "limits", "actions", "energy", "persist",
             "record", "outbox", "isotime", "config", "topics", "meter_watch"):
    module(name + ".py")
