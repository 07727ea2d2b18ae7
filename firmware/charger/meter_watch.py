# The board's Modbus meters in the charger (docs/meters.md): built from the config's "meters"
# block on the board's serial port, watched by the worker (meter.lost / meter.restored
# events) and reported in the device read. The poll runs in a thread of its own
# (runner.threaded) or between ticks on the bench (runner.Lockstep); the EV meter's reading
# reaches the control tick through the board (board.ev_meter: Meter.feed in sample()), the
# mains meter's reaches site balancing through the worker (site_local.py).
import meter_poll as mp


class MeterWatch:
    def __init__(self, agent, board):
        self.agent = agent
        self.poller = mp.bus(board.config["meters"], board.serial_port(), board.now_ms)
        self.ev = self.poller.ev
        self.mains = self.poller.mains
        board.ev_meter = self.ev
        self.roles = [(role, getattr(self.poller, role)) for role in mp.ROLES
                      if getattr(self.poller, role)]
        self.seen = [mp.WAITING] * len(self.roles)  # each meter's status at the last pass

    def service(self, now):
        # Worker: an event when a meter is lost (it never answered, or went silent) and when
        # it is back. The counts and the last error say why (docs/meters.md, "Faults").
        for i in range(len(self.roles)):
            role, m = self.roles[i]
            s = m.status(now)
            was = self.seen[i]
            if s == was:
                continue
            self.seen[i] = s
            if s == mp.LOST or (s == mp.OK and was == mp.LOST):
                r = m.report(now)
                self.agent.emit("meter.lost" if s == mp.LOST else "meter.restored", {
                    "deviceId": self.agent.device_id, "meter": role, "model": m.model,
                    "address": m.address, "lastError": r.get("lastError"),
                    "counts": r["counts"]})

    def read(self, now):
        # The device read's "meters".
        out = {}
        for role, m in self.roles:
            out[role] = m.report(now)
        return out
