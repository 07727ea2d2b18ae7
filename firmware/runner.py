# The loops that drive an agent. lockstep(): one thread, paced by a board that hands out
# ticks (the bench in virtual time). threaded(): the control loop in its own thread, so a
# blocking network call in the uplink can never hold up a pilot or contactor decision.
from micropython import const
import _thread

SERVICE_TICKS = const(10)  # network-side work every 10 ticks (100 ms at 10 ms ticks)


def pump(agent, publish, now):
    # Publish what the agent has to say; stops at the first failure and keeps the rest.
    agent.service(now)
    while agent.outbox:
        publish("events", agent.outbox[0], False)
        agent.outbox.pop(0)
    if agent.state_due(now):
        publish("state", agent.state_report(now), True)


def lockstep(agent, board):
    def on_request(kind, payload):
        board.publish("responses", agent.handle(kind, payload, board.now_ms()), False)

    n = 0
    while True:
        now = board.wait_tick(on_request)
        agent.tick(now)
        n += 1
        if n >= SERVICE_TICKS:
            n = 0
            pump(agent, board.publish, now)


def control_loop(agent, board):
    try:
        while True:
            agent.tick(board.wait_tick(None))
    except BaseException as e:  # a bug here must leave the charger safe, then stop it
        board.set_contactor(False)
        board.set_pilot(0)
        print("control: stopped:", repr(e))
        board.halt()


def threaded(agent, board, uplink):
    _thread.start_new_thread(control_loop, (agent, board))
    uplink.run(agent)
