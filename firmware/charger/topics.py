# The MQTT topics (docs/protocol.md), defined once: the agent, the bench and the tools all use these.
PREFIX = "ev-charger"
REQUESTS = ("commands", "settings", "read", "limit")  # request kinds, in the bench link's numbering


def base(prefix, device_id):
    # "ev-charger/charger-1/": every topic of one charger starts with it.
    return (prefix or PREFIX) + "/" + device_id + "/"


def site(site_id):
    # "site/home/": the site meter's readings ("meter") and the chargers' records
    # ("chargers/{id}") of one site (docs/site.md).
    return "site/" + site_id + "/"
