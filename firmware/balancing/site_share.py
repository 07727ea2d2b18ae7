# The allocation of docs/site.md, as a pure function of the data every charger of a site sees
# (the meter's reading and the chargers' records), so each computes the same shares and no
# coordinator is needed. Integers in deciamps; deterministic.
# A charger, as every function here takes it: (id, phases, draw dA, wants dA, fresh, offered
# dA, the most it offered in the last 6 s dA), for every charger of the site the caller
# knows, itself included; only room() reads the offers. A vehicle may still be following an
# offer up to 5 s after it (IEC 61851-1), lowered since or not.
from micropython import const
from pilot import MIN_CURRENT  # 6 A: below it the pilot offers nothing

ROTATE_MS = const(900000)  # the order of who gets 6 A when not all can rotates every 15 min


def household(meter, chargers):
    # Per phase: the meter minus the fresh chargers' draws. A stale or missing record is not
    # subtracted, so its load counts as household (it over-estimates: the safe side). Nor is
    # a claim the meter contradicts: on each phase the claims count, smallest first, only as
    # far as the meter shows current for them, so a forged or confused record cannot make
    # the household smaller than it is by more than the meter allows, nor negative. A draw
    # counts only up to what its charger says it wants (a charger not asking draws nothing
    # for long: a record saying otherwise hides household, and is not believed).
    h = list(meter)
    for p in range(1, len(h) + 1):
        for c in sorted((c for c in chargers if c[4] and p in c[1]), key=_claim):
            if _claim(c)[0] <= h[p - 1]:
                h[p - 1] -= _claim(c)[0]
    return h


def _claim(c):
    return min(c[2], c[3]), c[0]


def cut(limit_da, meter, chargers, me, whole=False):
    # The most charger `me` may offer while the meter shows a phase of its above the limit,
    # whatever the records say: its draw less its part of the excess, in proportion to its
    # draw among the draws the meter shows (all of the excess when those are not more than
    # its own, or when `whole`: the records have not explained it). None while no phase of
    # its is above.
    mine = None
    for c in chargers:
        if c[0] == me:
            mine = c
    if mine is None:
        return None
    top = None
    h = None
    for p in mine[1]:
        excess = meter[p - 1] - limit_da
        if excess > 0:
            if h is None:
                h = household(meter, chargers)
            drawn = meter[p - 1] - h[p - 1]
            part = excess if whole or drawn <= mine[2] else -(-excess * mine[2] // drawn)
            v = max(0, mine[2] - part)
            top = v if top is None else min(top, v)
    return top


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
    # Returns {id: share dA} for the fresh chargers asking.
    # What the fuse leaves beyond the household (the chargers' own draws are not in it).
    cap = [max(0, fuse_da - margin_da - h) for h in household(meter, chargers)]
    active = sorted((c[0], c[1], c[3]) for c in chargers if c[4] and c[3] > 0)
    alloc = fair(active, cap)
    if all(v >= MIN_CURRENT for v in alloc.values()):
        return alloc
    # Not enough for everyone at 6 A: admit in an order that rotates every 15 minutes.
    admitted = []
    for c in _rotated(active, now_ms):
        trial = fair(admitted + [c], cap)
        if all(v >= MIN_CURRENT for v in trial.values()):
            admitted.append(c)
    out = fair(admitted, cap)
    for c in active:
        out.setdefault(c[0], 0)
    return out


def _rotated(items, now_ms):
    # Sorted items in the order that rotates every ROTATE_MS (who comes first when not all can).
    turn = (now_ms // ROTATE_MS) % len(items)
    return items[turn:] + items[:turn]


def room(limit_da, meter, chargers, share, me, now_ms):
    # How high charger `me` may rise now: what it keeps (its draw, or its offer where that is
    # lower: its vehicle is letting go) plus its part of the current free on each of its
    # phases. A charger whose share fell may still draw its old current for seconds (a
    # vehicle has 5 s to follow a lower offer), so a rise waits for the current to be
    # released instead of taking it at once; the free current is split among the chargers
    # whose shares exceed what they keep, in proportion to the excess.
    mine = None
    risers = []  # (id, phases, weight: share - what it keeps, what it keeps)
    for c in chargers:
        if c[0] == me:
            mine = c
        kept = min(c[2], c[5])
        excess = share.get(c[0], 0) - kept
        if c[4] and excess > 0:
            risers.append((c[0], c[1], excess, kept))
    if mine is None:
        return 0
    kept = min(mine[2], mine[5])
    excess = share.get(me, 0) - kept
    if excess <= 0:
        return kept  # not rising: what it draws stays, as far as it is offered
    # Free: what the reading shows under the limit, less what the others' vehicles may still
    # take: all they were offered in the last seconds, lowered since or not (a vehicle
    # follows each change after a delay, not the last offer at once).
    # A stale record (the caller passes it only until it has been stale a timeout) may be a
    # charger alive but unheard, which sees this one as stale too and may have risen since:
    # while it asked for more than it drew and the meter still shows what it claimed, all
    # it asked for is kept for it, so two such chargers never both take what is free.
    h = household(meter, chargers)
    free = list(meter)
    for c in chargers:
        more = 0
        if c[4] and c[0] != me and c[6] > c[2] and c[3] > 0:  # (a charger not asking:
            # unplugged, paused, faulted, has stopped offering)
            more = c[6] - c[2]
        elif not c[4] and c[3] > c[2] and all(c[2] <= h[p - 1] for p in c[1]):
            more = c[3] - c[2]
        for p in c[1]:
            free[p - 1] += more
    free = [max(0, limit_da - m) for m in free]
    total = [0] * len(meter)
    for r in risers:
        for p in r[1]:
            total[p - 1] += r[2]
    # Under 6 A nothing can be offered. When the split leaves chargers starting from below
    # 6 A under it (shares that promise more than is free, from a record the meter cannot
    # refute), those on this charger's phases take their parts together, one charger at a
    # time in the rotation's order, so that none starves.
    thin = sorted(r[0] for r in risers
                  if r[3] + _part(r[1], r[2], free, total) < MIN_CURRENT and _meets(r[1], mine[1]))
    if me not in thin:
        return kept + _part(mine[1], excess, free, total)
    if _rotated(thin, now_ms)[0] != me:
        return kept
    up = excess
    for p in mine[1]:
        pooled = 0
        for r in risers:
            if p in r[1] and r[0] in thin:
                pooled += r[2]
        if total[p - 1] > free[p - 1]:
            up = min(up, free[p - 1] * pooled // total[p - 1])
    return kept + up


def _part(phases, weight, free, total):
    # A riser's part of the free current on its phases: in proportion to its weight.
    up = weight
    for p in phases:
        if total[p - 1] > free[p - 1]:
            up = min(up, free[p - 1] * weight // total[p - 1])
    return up


def _meets(a, b):
    for p in a:
        if p in b:
            return True
    return False
