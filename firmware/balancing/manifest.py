# Site balancing (docs/site.md), optional: the site's shares and the balancer that hands
# this charger's share to the control core. Frozen flat: each module keeps its global name.
for name in ("site_balance", "site_share", "site_local"):
    module(name + ".py")
