"""Power cuts at random instants during a stream of cap writes: after every reboot the cap
is the last acknowledged value or the one being written, and no current is offered above it."""
import random
import time

import sim_board as sim
from conftest import plug
from tools.bench.flash_model import CuttableFlash, PowerCut
from tools.bench.rig import InProcessRig, ProcessRig

CAPS = [1.0, 2.3, 3.68, 4.6, 7.36]  # 0 A (suspended), 10 A, 16 A, 20 A, 32 A at 230 V


def duty_for(kw):
    amps10 = int(round(kw * 1000)) * 10 // 230
    return 10000 if amps10 < 60 else amps10 * 10000 // 600


def check_boot(rig, allowed):
    """After boot: safe first, then never more than the loaded cap allows."""
    assert rig.bench.duty_counts == 10000 and not rig.bench.drive
    start = len(rig.bench.duty_log)
    rig.run(1500)
    loaded = rig.read()["settings"]["max_charge_rate"]["value"]
    assert loaded in allowed, (loaded, allowed)
    for _, counts in rig.bench.duty_log[start:]:
        assert counts in (0, 10000) or counts <= duty_for(loaded)
    return loaded


def test_torn_flash_writes_never_corrupt_the_cap(tmp_path):
    rnd = random.Random(7)
    flash = CuttableFlash()
    rig = InProcessRig(str(tmp_path), store_factory=lambda: sim.FileStore(
        "/flash", opener=flash.open, rename=flash.rename))
    plug(rig, 3000)
    acked = None
    cuts = 0
    for _ in range(300):
        value = rnd.choice(CAPS)
        flash.budget = rnd.randint(0, 60)  # bytes until the power goes; a record is ~40
        try:
            if rig.settings(max_charge_rate=value)["success"]:
                acked = value
            flash.budget = None
            rig.run(rnd.choice((10, 50, 200)))
        except PowerCut:
            cuts += 1
            rig.power_cut()
            rig.run(200)
            flash.budget = None
            rig.boot()
            allowed = {value} | ({acked} if acked is not None else {50})
            acked = check_boot(rig, allowed)
    assert cuts > 50 and flash.renames > 50


def test_killed_micropython_keeps_an_acknowledged_cap(tmp_path, mpy_dir):
    rnd = random.Random(11)
    rig = ProcessRig(str(tmp_path), mpy_dir)
    try:
        plug(rig, 3000)
        acked = None
        for _ in range(25):
            for _ in range(rnd.randint(0, 3)):  # some writes that complete
                value = rnd.choice(CAPS)
                if rig.settings(max_charge_rate=value)["success"]:
                    acked = value
            value = rnd.choice(CAPS)
            rig.send_nowait("settings", {"requestId": "cut",
                                         "settings": {"max_charge_rate": {"value": value,
                                                                          "unit": "kw"}}})
            time.sleep(rnd.random() * 0.003)  # the power goes somewhere in the write
            rig.power_cut()
            rig.run(100)
            rig.boot()
            allowed = {value} | ({acked} if acked is not None else {50})
            acked = check_boot(rig, allowed)
    finally:
        rig.close()
