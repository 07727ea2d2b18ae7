# The charger API's names (docs/protocol.md), defined once: the request kinds, what comes
# back, the HTTP paths that ask for them (http.md: the cloud API's, which the HTTP front
# serves as they are, and which every reply names) and the MQTT topics they make. The agent,
# every uplink, the bench and the tools use these.
PREFIX = "ev-charger"
REQUESTS = ("commands", "settings", "read", "limit", "update")  # request kinds, in the bench
# link's numbering
RESPONSES = "responses"  # a reply to each request
STATE = "state"  # the device read, whenever it changes (retained)
EVENTS = "events"  # what happened, at least once
AVAILABILITY = "availability"  # MQTT: "online", or "offline" (the last will), retained
# The paths under /ev-charger/{id}, each a request kind: (method, the path after the id, the
# kind, the field of the request the body fills: None where the body is the request itself,
# without its requestId). The HTTP front routes by it and path() names a reply's path from
# it, so a kind added to REQUESTS is served over HTTP by one row here.
ROUTES = (("GET", "", "read", None), ("POST", "", "commands", None),
          ("POST", "/settings", "settings", "settings"), ("POST", "/limit", "limit", None),
          ("POST", "/firmware", "update", None))
ACTIONS = "/actions/"  # GET /actions/{actionId}: an action as the charger still remembers it
SITE_METER = "meter"  # after site(): the site meter's readings
SITE_CHARGERS = "chargers/"  # after site(): each charger's record, then its id


def base(prefix, device_id):
    # "ev-charger/charger-1/": every topic of one charger starts with it.
    return (prefix or PREFIX) + "/" + device_id + "/"


def path(device_id, kind):
    # The API path a reply to a request of `kind` names: "/ev-charger/charger-1/settings".
    tail = ""
    for route in ROUTES:
        if route[2] == kind:
            tail = route[1]
            break
    return "/" + PREFIX + "/" + device_id + tail


def site(site_id):
    # "site/home/": the site meter's readings (SITE_METER) and the chargers' records
    # (SITE_CHARGERS + id) of one site (docs/site.md).
    return "site/" + site_id + "/"
