# The allocation of docs/site.md, as a pure function of the data every charger of a site sees
# (the meter's reading and the chargers' records), so each computes the same shares and no
# coordinator is needed. Integers in deciamps; deterministic.
from micropython import const
from pilot import MIN_CURRENT  # 6 A: below it the pilot offers nothing

ROTATE_MS = const(900000)  # the order of who gets 6 A when not all can rotates every 15 min


def household(meter, chargers):
    # Per phase: the meter minus the fresh chargers' draws. A stale or missing record is not
    # subtracted, so its load counts as household (it over-estimates: the safe side).
    h = list(meter)
    for c in chargers:
        if c[4]:  # fresh
            for p in c[1]:
                h[p - 1] -= c[2]
    return h


def fair(active, capacity):
    # Max-min fair shares ("water filling"): everyone rises together, a charger stops at
    # what it wants, a phase stops everyone on it when it is full. active: (id, phases,
    # wants); capacity: per phase, dA. Returns {id: dA}.
    alloc = {c[0]: 0 for c in active}
    rem = list(capacity)
    frozen = set()
    while True:
        live = [c for c in active if c[0] not in frozen]
        if not live:
            return alloc
        users = [0] * len(rem)
        for c in live:
            for p in c[1]:
                users[p - 1] += 1
        step = min(c[2] - alloc[c[0]] for c in live)
        for p in range(len(rem)):
            if users[p]:
                step = min(step, rem[p] // users[p])
        if step > 0:
            for c in live:
                alloc[c[0]] += step
                for p in c[1]:
                    rem[p - 1] -= step
        stuck = [c[0] for c in live if alloc[c[0]] >= c[2] or
                 any(rem[p - 1] < users[p - 1] for p in c[1])]
        if not stuck:
            return alloc  # nothing left to share (rounding leftovers only)
        frozen.update(stuck)


def shares(fuse_da, margin_da, meter, chargers, now_ms):
    # chargers: (id, phases, draw dA, wants dA, fresh) for every charger of the site the
    # caller knows, itself included. Returns {id: share dA} for the fresh ones asking.
    # What the fuse leaves beyond the household (the chargers' own draws are not in it).
    cap = [max(0, fuse_da - margin_da - h) for h in household(meter, chargers)]
    active = sorted((c[0], c[1], c[3]) for c in chargers if c[4] and c[3] > 0)
    alloc = fair(active, cap)
    if all(v >= MIN_CURRENT for v in alloc.values()):
        return alloc
    # Not enough for everyone at 6 A: admit in an order that rotates every 15 minutes.
    n = len(active)
    turn = (now_ms // ROTATE_MS) % n
    admitted = []
    for c in active[turn:] + active[:turn]:
        trial = fair(admitted + [c], cap)
        if all(v >= MIN_CURRENT for v in trial.values()):
            admitted.append(c)
    out = fair(admitted, cap)
    for c in active:
        out.setdefault(c[0], 0)
    return out


def room(limit_da, meter, chargers, share, me):
    # How high charger `me` may rise now: its draw plus its part of the current the reading
    # shows free on each of its phases (limit - meter). A charger whose share fell may still
    # draw its old current for seconds (a vehicle has 5 s to follow a lower offer), so a rise
    # waits for the current to be released instead of taking it at once; the free current is
    # split among the chargers whose shares exceed their draws, in proportion to the excess.
    mine = None
    excesses = []  # (phases, share - draw) of the fresh chargers still below their shares
    for c in chargers:
        if c[0] == me:
            mine = c
        excess = share.get(c[0], 0) - c[2]
        if c[4] and excess > 0:
            excesses.append((c[1], excess))
    if mine is None:
        return 0
    excess = share.get(me, 0) - mine[2]
    if excess <= 0:
        return mine[2]  # not rising: its draw stays
    up = excess
    for p in mine[1]:
        free = max(0, limit_da - meter[p - 1])
        total = 0
        for phases, n in excesses:
            if p in phases:
                total += n
        if total > free:
            up = min(up, free * excess // total)
    return mine[2] + up
