# The loops that drive an agent, and the wiring: what the config names, built. On a board,
# three threads: the control loop (pilot and contactor, every tick, never waits for
# anything), the worker (events, flash, local duties, every 100 ms whether or not a broker
# is reachable) and the uplink (MQTT or OCPP, may block for ever; with several, each has a
# thread; with none, the worker runs in the calling thread); webhooks, where configured, get
# one more, and so does the Modbus meters' poll (docs/meters.md). On the bench in virtual
# time one thread does it all in lockstep: the board hands out ticks and requests arrive
# between them.
from micropython import const
import gc
import _thread
from nap import nap
import topics
from updater import Updater

SERVICE_TICKS = const(10)  # the worker's period in ticks (100 ms at 10 ms ticks)
SITE = ("site_balance", "SiteBalancer")  # site balancing, by name as the uplinks are (config.py)
BENCH = "bench"  # Lockstep's uplink: the bench's link
SITE_LOCAL = ("site_local", "LocalSite")  # ... on the charger's own mains meter


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
        # The bench's link is this charger's uplink, there from the start.
        Updater(agent, [BENCH]).uplink_reached(BENCH)
        # The Modbus meters' poll, once a period between ticks (a thread on a board).
        self.poller = agent.meters.poller if agent.meters else None

    def on_request(self, kind, payload):
        self.board.publish(topics.RESPONSES, self.agent.handle(kind, payload, self.board.now_ms()))

    def on_message(self, topic, msg):
        if self.site:
            self.site.on_message(topic, msg)

    def step(self, now):
        if self.poller:
            self.poller.step(now)
        self.agent.tick(now)
        if self.site:  # every tick, as the uplink's loop: a reading is used when it comes
            self.site.service(self.board.publish_to, now)
        self._n += 1
        if self._n >= SERVICE_TICKS:
            self._n = 0
            self.agent.service(now)
            self.agent.flush(self.board.publish, now)

    def run(self):
        # Until the board restarts (an update, a rollback: board.restart()).
        board = self.board
        while not board.restarting:
            self.step(board.wait_tick(self.on_request))


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
            agent.faults += 1
        # Collect here, little and often, where waiting costs nothing, rather than let
        # the heap fill and collect in the middle of a request (docs/esp32-timing.md).
        gc.collect()
        nap(period)


def threaded(agent, board, uplinks, webhooks=None):
    # Each uplink in a thread of its own, the last in this one (with none: the worker). An
    # uplink's run() returns only when the board must restart (an OCPP Reset, its
    # transaction ended): it restarts.
    _thread.start_new_thread(control_loop, (agent, board))
    if agent.meters:
        _thread.start_new_thread(agent.meters.poller.run, ())
    if not uplinks:
        worker_loop(agent, board)  # no network: the charger's own duties are all there is
        return  # (never reached: the worker runs for ever)
    _thread.start_new_thread(worker_loop, (agent, board))
    if webhooks:
        _thread.start_new_thread(webhooks.run, ())
    for uplink in uplinks[:-1]:
        _thread.start_new_thread(_uplink_loop, (uplink, board))
    _uplink_loop(uplinks[-1], board)


def _uplink_loop(uplink, board):
    uplink.run()
    board.restart()


def serve(agent, board):
    # What the installation's config asks for, wired and running: the loops above, the
    # uplinks it names (config.uplinks(), built through config.UPLINKS: docs/uplinks.md),
    # and webhooks. Every board's main ends here.
    import config  # a board's main has it loaded already (it checked the config)
    cfg = board.config
    names = config.uplinks(cfg)
    Updater(agent, names)  # before the uplinks: they report what it does (OCPP)
    site_balancer(agent, cfg)  # before the uplinks: on a mains meter it needs none
    uplinks = []
    for name in names:  # all built before the loops start: OCPP holds
        module, cls = config.uplink(name)  # current until a transaction is authorized
        uplinks.append(getattr(__import__(module), cls)(cfg, board, agent))
    hooks = None
    if cfg.get("webhook_url"):
        from webhook import Webhooks
        hooks = Webhooks(cfg["webhook_url"], cfg["webhook_secret"], board.unix_ms,
                         ca_file=cfg.get("ca_file"))
        agent.on_event = hooks.offer
    threaded(agent, board, uplinks, hooks)


def site_balancer(agent, cfg):
    # The site's share (site_balance.py) where the installation has a site block, built
    # once: an extra of the MQTT uplink, which carries its messages (or of Lockstep, on the
    # bench). With the charger's own mains meter the worker runs it (site_local.py: the
    # fuse holds with no network) and the extra only carries messages.
    if cfg.get("site") and agent.site is None:
        module, cls = SITE
        agent.site = agent.limits.site = getattr(__import__(module), cls)(cfg, agent)
        if agent.meters and agent.meters.mains:
            module, cls = SITE_LOCAL
            agent.site = getattr(__import__(module), cls)(agent.limits.site, agent.meters.mains)
            agent.duties.append(agent.site.duty)
    return agent.site
