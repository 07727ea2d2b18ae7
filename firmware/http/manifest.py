# The HTTP front (docs/http.md): the API page's own paths served by the charger, its bounded
# request reader and the page from flash. Frozen flat: each module keeps its global name.
for name in ("http_uplink", "http_request", "http_page"):
    module(name + ".py")
