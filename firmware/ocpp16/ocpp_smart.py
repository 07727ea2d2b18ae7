# Smart charging (OCPP 1.6J section 3.13, docs/ocpp.md's mapping): the station's charging
# profiles evaluated into the charger's own ceilings. A ChargePointMaxProfile IS
# max_charge_rate, TxDefault and TxProfile are the dynamic limit; GetCompositeSchedule is
# what the ceiling would make of them. service() runs in the worker, as part of the
# station's; profile_fits() and composite() in the OCPP thread; both with the station's lock.
from micropython import const
from ceiling import AS_IS
from control import elapsed
import ocpp_profiles as pf
import pilot
import settings as st

_CLOCKLESS_MS = const(1000)  # re-evaluate this often while the wall clock is unknown
_IDLE_EVAL_MS = const(60000)  # and at least this often otherwise


class Smart:
    def __init__(self, station):
        self.station = station
        self.agent = station.agent
        self.profiles = pf.Profiles(station.agent.persist)
        self._eval_at = 0
        self._eval_wait = 0
        self._cap_w = None  # the max_charge_rate a ChargePointMaxProfile set
        self._dynamic = None  # (value, unit) of the dynamic limit the profiles set

    def service(self, now):
        # Worker: the profiles evaluated again when they changed or a period may have ended.
        if self.profiles.changed or elapsed(now, self._eval_at) >= self._eval_wait:
            self._apply(now)

    def _to_da(self, tenths, watts):
        return self.agent.settings.per_phase_da(tenths // 10) if watts else tenths

    def _moment(self, ahead_s=0):
        # (Unix s or None, s into the transaction or None, its number, ms into the current
        # second of either, the later) ahead_s from now.
        station = self.station
        tx = station.tx
        u = station.unix_ms()
        r = None
        frac = 0
        if tx:
            r = elapsed(self.agent.board.now_ms(), tx[3])
            frac = r % 1000
            r = r // 1000 + ahead_s
        if u is not None:
            frac = max(frac, u % 1000)
            u = u // 1000 + ahead_s
        return u, r, (tx[0] if tx else None), frac

    def _apply(self, now):
        ag = self.agent
        self.profiles.changed = False
        u, r, n, frac = self._moment()
        cap_da, value, unit, w1 = self.profiles.evaluate((pf.CP_MAX,), u, r, n, self._to_da)
        if cap_da is not None:  # the profile IS max_charge_rate
            w = st.watts(value) if unit == "kw" else st.watts(
                ag.settings.offered_kw(pf.tenths(value)))
            self._set_cap(w, now)
        elif self._cap_w is not None:  # no longer in force: back to the installation's default
            self._set_cap(ag.settings.default_w, now)
            self._cap_w = None
        da, value, unit, w2 = self.profiles.evaluate((pf.TX, pf.TX_DEFAULT), u, r, n,
                                                     self._to_da)
        wait = _IDLE_EVAL_MS if u is not None else _CLOCKLESS_MS
        for w in (w1, w2):  # whole seconds from a time taken in whole seconds: never late
            if w is not None and w * 1000 - frac < wait:
                wait = w * 1000 - frac
        if da is not None:
            top = ag.settings.max_current if unit == "a" else st.KW_MAX
            value = min(value, top)
            if (value, unit) != self._dynamic:
                ag.limits.set_dynamic(value, unit, None, "ocpp", now)
                self._dynamic = (value, unit)
        elif self._dynamic is not None:
            ag.limits.clear_dynamic(now)
            self._dynamic = None
        self._eval_at = now
        self._eval_wait = max(wait, 100)

    def _set_cap(self, w, now):
        # When the profile's value changes (the last writer of max_charge_rate wins: an
        # MQTT write beside OCPP stands until the profile's next change).
        s = self.agent.settings
        if w != self._cap_w:
            self._cap_w = w
            if w != s.cap_w:
                s.write({st.CAP: {"value": w / 1000, "unit": "kw"}}, now)

    def profile_fits(self, p):
        # A ChargePointMaxProfile is max_charge_rate: nothing above 50 kW.
        if p.purpose != pf.CP_MAX:
            return True
        per = p.periods
        for i in range(1, len(per), 2):
            w = per[i] // 10 if p.watts else st.watts(self.agent.settings.offered_kw(per[i]))
            if w > st.KW_MAX * 1000:
                return False
        return True

    def composite(self, duration, watts):
        # GetCompositeSchedule: what the charger will apply over the next `duration` s,
        # every source counted (lowest wins, Ceiling.lowest_with) and what the pilot can
        # signal, as [(startPeriod, limit)] in A or W.
        ag = self.agent
        s = ag.settings
        periods = []
        t = 0
        while t < duration and len(periods) < pf.MAX_PERIODS:
            u, r, n, _ = self._moment(t)
            cap, _, _, w1 = self.profiles.evaluate((pf.CP_MAX,), u, r, n, self._to_da)
            if cap is None:
                cap = s.per_phase_da(s.cap_w)
            dyn, _, _, w2 = self.profiles.evaluate((pf.TX, pf.TX_DEFAULT), u, r, n, self._to_da)
            if dyn is None:  # another controller's (MQTT) as it stands, not ours once it ended
                dyn = AS_IS if self._dynamic is None else -1
            da = pilot.offer(ag.ceiling.lowest_with(cap, dyn))
            value = st.watts(s.offered_kw(da)) if watts else da / 10
            if not periods or periods[-1][1] != value:
                periods.append((t, value))
            step = None
            for w in (w1, w2):
                if w is not None and (step is None or w < step):
                    step = w
            if step is None:
                break
            t += max(step, 1)
        return periods
