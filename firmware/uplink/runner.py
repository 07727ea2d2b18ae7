# The loops that drive an agent. On a board, three threads: the control loop (pilot and
# contactor, every tick, never waits for anything), the worker (events, flash, local duties,
# every 100 ms whether or not a broker is reachable) and the uplink (MQTT or OCPP, may block
# for ever; with both, each has a thread); webhooks, where configured, get one more. On the
# bench in virtual time one thread does it all in lockstep: the board hands out ticks and
# requests arrive between them.
from micropython import const
import gc
import _thread
from nap import nap

SERVICE_TICKS = const(10)  # the worker's period in ticks (100 ms at 10 ms ticks)


class Lockstep:
    # One thread, paced by a board that hands out ticks (the bench in virtual time). The
    # in-process test rig drives step() itself; the micropython bench runs run().
    def __init__(self, agent, board):
        self.agent = agent
        self.board = board
        self._n = 0
        # Site balancing, where configured: the bench hands it the site's messages between
        # ticks (on_message) and carries its records as they are (board.publish_to).
        self.site = site_balancer(agent, board.config)

    def on_request(self, kind, payload):
        self.board.publish("responses", self.agent.handle(kind, payload, self.board.now_ms()))

    def on_message(self, topic, msg):
        if self.site:
            self.site.on_message(topic, msg)

    def step(self, now):
        self.agent.tick(now)
        if self.site:  # every tick, as the uplink's loop: a reading is used when it comes
            self.site.service(self.board.publish_to, now)
        self._n += 1
        if self._n >= SERVICE_TICKS:
            self._n = 0
            self.agent.service(now)
            self.agent.flush(self.board.publish, now)

    def run(self):
        while True:
            self.step(self.board.wait_tick(self.on_request))


def control_loop(agent, board):
    try:
        while True:
            agent.tick(board.wait_tick(None))
    except BaseException as e:  # a bug here must leave the charger safe, then stop it
        board.set_contactor(False)
        board.pilot_f()
        print("control: stopped:", repr(e))
        board.halt()


def worker_loop(agent, board):
    period = SERVICE_TICKS * board.TICK_MS
    while True:
        try:
            agent.service(board.now_ms())
        except Exception as e:  # reported, and tried again next period: never a hot loop
            print("worker:", repr(e))
        # Collect here, little and often, where waiting costs nothing, rather than let
        # the heap fill and collect in the middle of a request (docs/esp32-timing.md).
        gc.collect()
        nap(period)


def threaded(agent, board, uplinks, webhooks=None):
    # The last uplink runs in this thread; its run() returns only when the board must
    # restart (an OCPP Reset, its transaction ended).
    _thread.start_new_thread(control_loop, (agent, board))
    _thread.start_new_thread(worker_loop, (agent, board))
    if webhooks:
        _thread.start_new_thread(webhooks.run, ())
    for uplink in uplinks[:-1]:
        _thread.start_new_thread(uplink.run, (agent,))
    uplinks[-1].run(agent)
    board.restart()


def serve(agent, board):
    # What the installation's config asks for, wired and running: the loops above, the
    # uplinks (`uplink`: "mqtt", "ocpp" or "both"), Home Assistant discovery, site balancing
    # and webhooks. Every board's main ends here.
    cfg = board.config
    kind = cfg.get("uplink", "mqtt")
    uplinks = []
    if kind in ("mqtt", "both"):
        uplinks.append(_mqtt(agent, board, cfg))
    if kind in ("ocpp", "both"):  # before the loops start: it holds current until authorized
        from ocpp_uplink import OcppUplink
        uplinks.append(OcppUplink(cfg, board, agent))
    hooks = None
    if cfg.get("webhook_url"):
        from webhook import Webhooks
        hooks = Webhooks(cfg["webhook_url"], cfg["webhook_secret"], board.unix_ms,
                         ca_file=cfg.get("ca_file"))
        agent.on_event = hooks.offer
    threaded(agent, board, uplinks, hooks)


def _mqtt(agent, board, cfg):
    from mqtt_uplink import Uplink
    import topics
    extras = []
    if cfg.get("discovery", True):
        from discovery import Discovery
        from agent import VERSION
        extras.append(Discovery(cfg, topics.base(cfg.get("topic_prefix"), cfg["device_id"]),
                                agent.model, VERSION))
    site = site_balancer(agent, cfg)
    if site:
        extras.append(site)
    return Uplink(cfg, board, extras)


def site_balancer(agent, cfg):
    # The site's share (site_balance.py) where the installation has a site block.
    if not cfg.get("site"):
        return None
    from site_balance import SiteBalancer
    agent.limits.site = SiteBalancer(cfg, agent)
    return agent.limits.site
