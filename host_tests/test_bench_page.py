"""make sim's live page in a real browser: Debian's Chromium, headless, driven by Playwright.

One launcher and one page for the whole file, and the tests in order tell one bench session:
plug in, cap, a refused cap, idle and charge, a power cut, a dynamic limit (then one page for
two chargers). The dynamic limit's test leaves the screenshot the README shows in build/bench-page.png (`make page-screenshot`
copies it to docs/). Skips, saying why, where Playwright or Chromium is not installed.
"""
import os
import re
import shutil
import time
import urllib.request

import pytest

from e2e import Broker, launch, stop
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


@pytest.fixture(scope="module")
def sim(tmp_path_factory, mpy_dir):
    """make sim's launcher with its page on a free port; the page's address."""
    broker = Broker(Broker.preferred()).start()
    port = free_port()
    proc = launch(broker, tmp_path_factory.mktemp("flash"), "--page-port", str(port))
    url = "http://127.0.0.1:%d/" % port
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(url, timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                code, out = stop(proc)
                broker.stop()
                pytest.fail("the page did not come up (exit %s):\n%s" % (code, out))
            time.sleep(0.2)
    yield url
    code, out = stop(proc)
    broker.stop()
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


def test_several_chargers_on_one_page_a_tab_each(page, tmp_path):
    # Two launchers on one broker and one page server for both (a site bench's page).
    broker = Broker(Broker.preferred()).start()
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
        broker.stop()
