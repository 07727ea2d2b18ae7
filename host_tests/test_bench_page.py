"""make sim's live page in a real browser: Debian's Chromium, headless, driven by Playwright.

One launcher and one page for the whole file, and the tests in order tell one bench session:
plug in, cap, a refused cap, idle and charge, a power cut, a dynamic limit (then one page for
two chargers, and a site bench's page). The dynamic limit's test leaves the screenshot the
README shows in build/bench-page.png (`make page-screenshot` copies it to docs/). Skips, saying
why, where Playwright or Chromium is not installed.
"""
import json
import os
import re
import shutil
import threading
import time
import urllib.request

import paho.mqtt.client as mqtt
import pytest

from e2e import launch, stop
from tools.bench.broker import free_port
from tools.bench.page.server import PageServer
from tools.paths import BUILD

playwright = pytest.importorskip(
    "playwright.sync_api", reason="Playwright is not installed (pip install -r requirements.txt)")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("no Chromium to drive: apt-get install chromium (.ci/run does)",
                allow_module_level=True)
expect = playwright.expect

# toolchain.md: as root, no sandbox; and nothing in the background that would try to reach
# the internet from this closed network.
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOT = os.path.join(BUILD, "bench-page.png")
MEASURED_BLUE = (0x25, 0x63, 0xEB)  # the measured current's colour (page.js SERIES)
FUSE_RED, L1_BROWN, L2_BLACK = (0xC0, 0x39, 0x2B), (0x8B, 0x5A, 0x2B), (0x1D, 0x24, 0x30)  # site.js


API_TOKEN = "page-test-token-0123456789"  # the charger's own HTTP front (docs/http.md)


@pytest.fixture(scope="module")
def api_port():
    return free_port()


@pytest.fixture(scope="module")
def sim(module_broker, tmp_path_factory, mpy_dir, api_port):
    """make sim's launcher with its page on a free port (and the charger's HTTP front on
    api_port); the page's address."""
    broker = module_broker
    port = free_port()
    proc = launch(broker, tmp_path_factory.mktemp("flash"), "--page-port", str(port),
                  "--http-port", str(api_port), "--api-token", API_TOKEN)
    url = "http://127.0.0.1:%d/" % port
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(url, timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                code, out = stop(proc)
                pytest.fail("the page did not come up (exit %s):\n%s" % (code, out))
            time.sleep(0.2)
    yield url
    code, out = stop(proc)
    assert code == 0 and "sim: page %s" % url in out and "sim: stopped" in out, out


@pytest.fixture(scope="module")
def page(sim):
    if os.path.exists(SCREENSHOT):
        os.remove(SCREENSHOT)  # a run that fails leaves none for make page-screenshot to copy
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield open_page(browser, sim)
        browser.close()


def open_page(browser, url):
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.problems = []  # console errors, uncaught exceptions, requests to elsewhere
    page.on("console", lambda m: m.type == "error" and page.problems.append(m.text))
    page.on("pageerror", lambda e: page.problems.append(str(e)))
    page.on("request", lambda r: r.url.startswith(url) or page.problems.append(r.url))
    page.set_default_timeout(15000)
    page.goto(url)
    return page


def text(page, selector, pattern, timeout=15000):
    expect(page.locator(selector)).to_have_text(re.compile(pattern), timeout=timeout)


def plot(page):
    """What the plot drew: points, the last measured current, and the top (0 top, 1 bottom)
    of the area under the measured current (its colour at 10 % on the transparent canvas; the
    ceilings are lines drawn over it, so the area is what only the measured current paints)."""
    return page.evaluate("""(rgb) => {
        const c = document.getElementById("plot");
        const px = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
        for (let i = 0; i < px.length; i += 4) {
            if (Math.abs(px[i + 3] - 0x1a) < 4 && Math.abs(px[i] - rgb[0])
                + Math.abs(px[i + 1] - rgb[1]) + Math.abs(px[i + 2] - rgb[2]) < 12)
                return {points: Number(c.dataset.points), current: Number(c.dataset.current),
                        top: Math.floor(i / 4 / c.width) / c.height};
        }
        return {points: Number(c.dataset.points), current: Number(c.dataset.current), top: 1};
    }""", list(MEASURED_BLUE))


def test_the_page_loads_live_without_console_errors(page):
    text(page, "#link", "^live")
    text(page, "#availability", "^online$", timeout=30000)
    text(page, "#status", "^disconnected$")
    text(page, "#pilot-state", "^A$")
    text(page, "#duty", r"^100 % \(x1")
    expect(page.locator("#chargers")).to_be_hidden()  # one charger: no tabs
    assert page.problems == []


def test_plugging_a_vehicle_closes_the_contactor_and_moves_the_plot(page):
    before = plot(page)
    assert before["current"] == 0 and before["top"] > 0.8  # no area: nothing measured
    page.click("#plug")
    text(page, "#vehicle-reply", "^bench: ev connected=true request=true$")
    text(page, "#contactor", "^closed$")
    text(page, "#status", "^charging$")
    text(page, "#current", r"^32\.0 A$")
    page.wait_for_function("Number(document.getElementById('plot').dataset.current) > 31")
    deadline = time.monotonic() + 5  # a new step is drawn as time moves on (each second)
    after = plot(page)
    while after["top"] >= 0.3 and time.monotonic() < deadline:
        time.sleep(0.2)
        after = plot(page)
    assert after["points"] > before["points"]
    assert after["top"] < 0.3, after  # the area rose to 32 A, near the top
    text(page, "#pilot-state", "^C$")
    text(page, "#levels", r"^\+6\.0 / -12\.0 V$")


def test_a_cap_of_3_68_kw_shows_26_66_percent_and_16_a(page):
    page.fill("#cap-value", "3.68")
    page.click("#cap-form button[type=submit]")
    text(page, "#cap-reply", "^200 OK$")
    text(page, "#duty", r"^26\.66 %$")
    text(page, "#offered", "^16 A$")
    text(page, "#current", r"^16\.0 A$")
    text(page, "#limited-by", "^max_charge_rate$")
    text(page, "#legend [data-series=cap] b", r"^3\.68 kW \(16 A\)$")


def test_a_refused_cap_shows_the_chargers_error(page):
    page.fill("#cap-value", "60")
    page.click("#cap-form button[type=submit]")
    text(page, "#cap-reply", r"^422 SETTING_OUT_OF_RANGE: max_charge_rate: value outside "
                             r"\[0, 50\] kw$")
    expect(page.locator("#cap-reply")).to_have_class(re.compile("refused"))
    page.fill("#limit-value", "10")
    page.fill("#limit-ttl", "0")
    page.click("#limit-form button[type=submit]")
    text(page, "#limit-reply", "^422 SETTING_OUT_OF_RANGE: ttl")
    text(page, "#duty", r"^26\.66 %$")  # a refused request changes nothing


def test_idle_and_charge_show_the_command_slot(page):
    page.click("#idle")
    text(page, "#command-reply", r"^202 idle: acknowledged \(act_")
    text(page, "#slot", "^idle act_.*: completed at")
    text(page, "#contactor", "^open$")
    page.click("#charge")
    text(page, "#command-reply", r"^202 charge: acknowledged \(act_")
    text(page, "#slot", "^charge act_.*: completed at")
    text(page, "#status", "^charging$")
    text(page, "#log", "push.completed")


def test_a_power_cut_shows_the_charger_offline_and_then_back(page):
    page.click("#power-cut")
    text(page, "#power-reply", "^bench: power on=false$")
    text(page, "#availability", "^offline$")
    text(page, "#status", "^offline$")
    text(page, "#duty", r"^0 % \(F")  # an unpowered board drives no PWM
    text(page, "#log", "charger-1 is offline")
    page.click("#power-on")
    text(page, "#availability", "^online$", timeout=30000)
    text(page, "#status", "^charging$", timeout=30000)
    text(page, "#duty", r"^26\.66 %$")  # the cap came back from flash


def test_a_dynamic_limit_from_the_page_and_the_screenshot(page):
    page.fill("#limit-value", "10")
    page.fill("#limit-ttl", "600")
    page.click("#limit-form button[type=submit]")
    text(page, "#limit-reply", r"^200 OK: 10 A until \d\d:\d\d:\d\d UTC$")
    text(page, "#duty", r"^16\.66 %$")
    text(page, "#limited-by", "^dynamic_limit$")
    text(page, "#legend [data-series=dynamic] b", "^10 A from bench-page until")
    text(page, "#current", r"^10\.0 A$")
    page.select_option("#window", "30")  # this session's seconds fill the plot
    time.sleep(2)  # a few more points at 10 A, so the step shows
    os.makedirs(BUILD, exist_ok=True)
    page.screenshot(path=SCREENSHOT, full_page=True)
    assert os.path.getsize(SCREENSHOT) > 20000
    assert page.problems == []


def test_the_chargers_own_page_from_flash(page, api_port):
    # GET / on the charger's HTTP front (firmware/http/http_page.py): it asks for the token
    # once, shows the status, power and cap, writes the cap and sends charge and idle, with
    # nothing but the charger's own endpoints (open_page counts any other request).
    url = "http://127.0.0.1:%d/" % api_port
    own = open_page(page.context.browser, url)
    expect(own.locator("#login")).to_be_visible()
    own.fill("#token", "not-the-token-0123456789")
    own.click("#login button")
    text(own, "#msg", "^The charger refused that token.$")
    expect(own.locator("#login")).to_be_visible()
    own.fill("#token", API_TOKEN)
    own.click("#login button")
    text(own, "#status", "^(charging|connected|suspended|idle|disconnected)$")
    text(own, "#power", r"^\d+\.\d\d kW$")
    text(own, "#cap", r"^[\d.]+ kW$")
    own.fill("#capkw", "5.5")
    own.click("#capform button")
    text(own, "#msg", r"^Cap set to 5\.5 kW\.$")
    text(own, "#cap", r"^5\.5 kW$")
    req = urllib.request.Request(url + "ev-charger/charger-1",
                                 headers={"Authorization": "Bearer " + API_TOKEN})
    with urllib.request.urlopen(req, timeout=5) as r:
        assert json.load(r)["data"]["settings"]["max_charge_rate"]["value"] == 5.5
    own.click("#idle")
    text(own, "#msg", "^idle: acknowledged$")
    own.click("#charge")
    text(own, "#msg", "^charge: acknowledged$")
    own.reload()  # the token is remembered: no question the second time
    expect(own.locator("#main")).to_be_visible()
    expect(own.locator("#login")).to_be_hidden()
    text(own, "#cap", r"^5\.5 kW$")
    refused = "Failed to load resource: the server responded with a status of 401 (Unauthorized)"
    assert own.problems == [refused]  # the wrong token's, and nothing else
    own.close()


def test_several_chargers_on_one_page_a_tab_each(page, broker, tmp_path):
    # Two launchers on one broker and one page server for both (a site bench's page).
    ids = ["bay-1", "bay-2"]
    procs = [launch(broker, tmp_path / d, "--device-id", d, "--no-page") for d in ids]
    server = PageServer(broker.address, ids, port=free_port()).start()
    tab = open_page(page.context.browser, server.url)
    try:
        expect(tab.locator("#chargers button")).to_have_text(ids)
        text(tab, "#charger-name", "^bay-1$")
        expect(tab.locator("#chargers .dot.online")).to_have_count(2, timeout=30000)
        tab.click("#chargers [data-device=bay-2]")
        text(tab, "#charger-name", "^bay-2$")
        tab.click("#plug")
        text(tab, "#vehicle-reply", "^bench: ev connected=true")
        text(tab, "#contactor", "^closed$")
        tab.fill("#cap-value", "60")
        tab.click("#cap-form button[type=submit]")
        text(tab, "#cap-reply", "^422 SETTING_OUT_OF_RANGE")
        tab.click("#chargers [data-device=bay-1]")  # the other charger is untouched
        text(tab, "#status", "^disconnected$")
        text(tab, "#contactor", "^open$")
        assert tab.problems == []
    finally:
        tab.close()
        server.stop()
        for proc in procs:
            stop(proc)


def drawn(page, canvas, rgb):
    """The value in A a solid line of this colour is drawn at, just before "now" (the right
    edge), read back from the canvas's pixels with the axis the page drew; None if none is."""
    return page.evaluate("""([id, rgb]) => {
        const c = document.getElementById(id), a = JSON.parse(c.dataset.axis);
        const x = Math.round((a.right - 3) * a.ratio), px = c.getContext("2d")
            .getImageData(x, 0, 1, c.height).data;
        const rows = [];
        for (let row = 0; row < c.height; row++) {
            const i = row * 4;
            if (px[i + 3] > 200 && Math.abs(px[i] - rgb[0]) + Math.abs(px[i + 1] - rgb[1])
                + Math.abs(px[i + 2] - rgb[2]) < 40) rows.push(row);
        }
        if (!rows.length) return null;
        const y = rows.reduce((s, r) => s + r, 0) / rows.length / a.ratio + 0.5;
        return a.maxA * (a.bottom - y) / (a.bottom - a.top);
    }""", [canvas, list(rgb)])


class SiteReadings:
    """What the site bench said on bench/site/home/readings, to hold the page to."""

    def __init__(self, address):
        self.last = None
        self.cond = threading.Condition()
        host, _, port = address.rpartition(":")
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.client.on_message = self._message
        self.client.connect(host, int(port))
        self.client.subscribe("bench/site/home/readings")
        self.client.loop_start()

    def _message(self, client, userdata, msg):
        with self.cond:
            self.last = json.loads(msg.payload)
            self.cond.notify_all()

    def close(self):
        self.client.loop_stop()
        self.client.disconnect()


def until(what, check, timeout=15):
    """Polls check() until it returns a true value (the page draws each second)."""
    deadline = time.monotonic() + timeout
    while not (got := check()):
        if time.monotonic() > deadline:
            pytest.fail("the page never showed %s" % what)
        time.sleep(0.2)
    return got


def near(a, b, tol=0.4):  # 0.4 A is 3 pixels on a 29 A scale: a line drawn where it belongs
    return a is not None and b is not None and abs(a - b) <= tol


def test_a_site_bench_shows_the_site_against_the_fuse_and_every_charger(page, broker,
                                                                         tmp_path):
    # make sim with a site, as a user starts it: its page opens on the site.
    port = free_port()
    proc = launch(broker, tmp_path / "flash", "--chargers", "2", "--site-fuse", "25",
                  "--site-phases", "3", "--page-port", str(port))
    bench = SiteReadings(broker.address)
    tab = None
    try:
        for line in proc.stdout:  # the page serves before the chargers boot
            if line.startswith("sim: page"):
                break
        tab = open_page(page.context.browser, "http://127.0.0.1:%d/" % port)
        expect(tab.locator("#chargers button")).to_have_text(["site home", "charger-1",
                                                              "charger-2"])
        text(tab, "#charger-name", "^site home$")
        text(tab, "#availability", "^meter live$")
        expect(tab.locator("#scope")).to_be_hidden()  # the site's view, not a charger's
        # The fuse: a line where the bench's fuse is, not merely a number in the legend.
        until("the fuse", lambda: bench.last and near(drawn(tab, "site-plot", FUSE_RED),
                                                      bench.last["fuse"]))
        assert bench.last["fuse"] == 25
        text(tab, "#site-legend [data-series=fuse] b", "^25 A per phase$")

        expect(tab.locator("#chargers .dot.online")).to_have_count(3, timeout=30000)
        tab.fill("#household-L1", "9")
        tab.fill("#household-L2", "4")
        tab.fill("#household-L3", "0")
        tab.click("#household-form button[type=submit]")
        text(tab, "#site-reply", "^site bench: household L1 9 A, L2 4 A, L3 0 A; the meter "
                                 "reads L1 9 A, L2 4 A, L3 0 A against the 25 A fuse$")
        # What the plot draws is what the bench said: L1 and L2 at the household's 9 and 4 A.
        until("the household on L1 and L2", lambda: bench.last["currents"][:2] == [9, 4] and
              near(drawn(tab, "site-plot", L1_BROWN), 9) and
              near(drawn(tab, "site-plot", L2_BLACK), 4))
        text(tab, "#site-legend [data-series=L1] b", r"^9 A \(household 9 A\)$")

        tab.click("#chargers [data-device=charger-1]")  # a vehicle on charger-1, on L1
        tab.click("#plug")
        text(tab, "#contactor", "^closed$")
        tab.click("#chargers [data-site=home]")
        # 25 A - the 1 A margin - 9 A of household: charger-1 takes 15 A, and L1 is 24 A.
        until("charger-1 at its share", lambda: near(
            bench.last["chargers"]["charger-1"]["current"], 15) and near(
            drawn(tab, "chargers-plot", MEASURED_BLUE),
            bench.last["chargers"]["charger-1"]["current"]) and near(
            drawn(tab, "site-plot", L1_BROWN), bench.last["currents"][0]), timeout=30)
        text(tab, "#chargers-legend [data-series='current:charger-1'] b", "^15 A on L1$")
        text(tab, "#chargers-legend [data-series='offered:charger-1'] b", "^15 A$")

        tab.click("#meter-off")
        text(tab, "#site-reply", r"^site bench: meter silenced \(each charger falls back")
        text(tab, "#availability", "^meter silent$")
        tab.click("#meter-on")
        text(tab, "#site-reply", "^site bench: meter back on$")
        text(tab, "#availability", "^meter live$")
        assert tab.problems == []
    finally:
        if tab:
            tab.close()
        bench.close()
        code, out = stop(proc)
    assert code == 0 and "sim: stopped" in out, out


def test_a_bench_with_modbus_meters_shows_them_and_takes_their_faults(page, module_broker,
                                                                       tmp_path):
    # A charger whose EV meter is the bench's pymodbus meter: the page shows what the charger
    # reads from it beside what the bench's meter holds and was asked, and a fault injected
    # from the page is what the charger then reports (docs/bench.md, "The page").
    port = free_port()
    proc = launch(module_broker, tmp_path / "flash", "--device-id", "metered", "--phases",
                  "3", "--ev-meter", "SDM630", "--page-port", str(port))
    tab = None
    try:
        for line in proc.stdout:
            if line.startswith("sim: page"):
                break
        tab = open_page(page.context.browser, "http://127.0.0.1:%d/" % port)
        text(tab, "#availability", "^online$", timeout=30000)
        expect(tab.locator("#meters-card")).to_be_visible()
        row = "#meters [data-meter=ev]"
        text(tab, row + " .bench", "^bench: SDM630 at 11, fault none, [0-9]+ requests")
        tab.click("#plug")
        text(tab, row + " .state", "^ok$")
        text(tab, row + " .reading", r"^32 / 32 / 32 A, 220[78][0-9] W, 1234\.\d kWh")
        tab.click(row + " button[data-fault=crc]")
        text(tab, "#meter-reply", '^bench: meter meter="ev" fault="crc"$')
        expect(tab.locator(row + " button[data-fault=crc]")).to_have_class(re.compile("active"))
        text(tab, row + " .state", "^lost$")  # after 3 s without a good reading
        text(tab, row + " .reading", r"crc [1-9][0-9]*, exception 0, wrong 0 \(last error crc\)$")
        text(tab, "#log", "meter.lost ev crc")
        tab.click(row + " button[data-fault=none]")
        text(tab, row + " .state", "^ok$")
        text(tab, "#log", "meter.restored ev crc")
        assert tab.problems == []
    finally:
        if tab:
            tab.close()
        code, out = stop(proc)
    assert code == 0 and "sim: stopped" in out, out
