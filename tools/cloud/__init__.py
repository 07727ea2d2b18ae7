"""The cloud end of the API (docs/cloud.md): a host-side service, never on the board, that
serves the API page's HTTP API for every charger on an MQTT broker, with freshness tiers,
stored actions and signed webhooks."""
