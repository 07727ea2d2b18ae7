# The lifetime energy register and the session that a power cut may interrupt. The board's
# meter counts energy since the board started (an S0 meter from zero, a meter with its own
# register from anywhere): only differences are used (control.energy_wh counts them). The
# register is persisted at most once per 0.1 kWh and at every session end; the value
# reported is the persisted one, so it never goes backwards (Home Assistant's
# total_increasing), and a power cut loses at most the unwritten 0.1 kWh. An open session
# is persisted at its start, so one that a power cut interrupted is closed after the
# restart with the energy it had.
import json
from micropython import const
import persist as ps
import record

_STEP_WH = const(100)  # write at most once per 0.1 kWh
_UNIT_WH = const(10)  # the stored word counts 10 Wh (24 bits: 167 MWh)


class Energy:
    def __init__(self, persist, control):
        self.persist = persist
        self.control = control
        self._base_wh = 0  # lifetime when the control loop first read the meter
        self._stored_wh = 0
        self.session = None  # {"id", "start"} of the open session (start: lifetime Wh)

    def load(self):
        # The register and an interrupted session: (ok, interrupted or None).
        w = self.persist.read_word(ps.ENERGY, 0)
        ok = w != record.CORRUPT
        self._base_wh = self._stored_wh = (w if ok else 0) * _UNIT_WH
        body = self.persist.read_blob(ps.SESSION)
        interrupted = None
        if body not in (None, record.CORRUPT) and body != b"{}":
            try:
                s = json.loads(body)
                interrupted = (str(s["id"]), max(0, self._base_wh - int(s["start"])))
            except (ValueError, KeyError, TypeError):
                ok = False
        if interrupted is not None:
            self.persist.write_blob(ps.SESSION, b"{}")
        return ok and body != record.CORRUPT, interrupted

    def saved_wh(self):
        # What the register says in flash: what a restart comes back with, so a reported
        # value never goes backwards (it advances in steps of 0.1 kWh or at a session end).
        return self._stored_wh

    def lifetime_wh(self):
        return self._base_wh + max(0, self.control.energy_wh)  # -1: not read yet

    def service(self):
        # Worker: persist each 0.1 kWh.
        wh = self.lifetime_wh()
        if wh - self._stored_wh >= _STEP_WH:
            self._store(wh)

    def _store(self, wh):
        if self.persist.write_word(ps.ENERGY, wh // _UNIT_WH):
            self._stored_wh = wh // _UNIT_WH * _UNIT_WH

    def started(self, session_id):
        self.session = {"id": session_id, "start": self.lifetime_wh()}
        self.persist.write_blob(ps.SESSION, json.dumps(self.session).encode())

    def ended(self):
        self._store(self.lifetime_wh())
        self.session = None
        self.persist.write_blob(ps.SESSION, b"{}")
