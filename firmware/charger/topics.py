# The charger API's names (docs/protocol.md), defined once: the request kinds, what comes
# back, the path a reply names (the cloud API's, which an HTTP front serves as they are)
# and the MQTT topics they make. The agent, every uplink, the bench and the tools use these.
PREFIX = "ev-charger"
REQUESTS = ("commands", "settings", "read", "limit")  # request kinds, in the bench link's numbering
RESPONSES = "responses"  # a reply to each request
STATE = "state"  # the device read, whenever it changes (retained)
EVENTS = "events"  # what happened, at least once
AVAILABILITY = "availability"  # MQTT: "online", or "offline" (the last will), retained
_OWN_PATH = ("settings", "limit")  # the rest are answered at /ev-charger/{id} itself
SITE_METER = "meter"  # after site(): the site meter's readings
SITE_CHARGERS = "chargers/"  # after site(): each charger's record, then its id


def base(prefix, device_id):
    # "ev-charger/charger-1/": every topic of one charger starts with it.
    return (prefix or PREFIX) + "/" + device_id + "/"


def path(device_id, kind):
    # The API path a reply to a request of `kind` names: "/ev-charger/charger-1/settings".
    return "/" + PREFIX + "/" + device_id + ("/" + kind if kind in _OWN_PATH else "")


def site(site_id):
    # "site/home/": the site meter's readings (SITE_METER) and the chargers' records
    # (SITE_CHARGERS + id) of one site (docs/site.md).
    return "site/" + site_id + "/"
