"""The tests' shared fixtures (pytest finds them here): the builds, the rigs, the brokers, the
cloud API's client, PostgreSQL and the RabbitMQ cluster. Helpers a test calls (plug, duty)
are imported from here too; the end-to-end ones (make sim's launcher, the MQTT client,
polling) are in e2e.py."""
import os
import shutil
import signal
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tools.bench import children, postgres, rabbit
from tools.bench.rig import InProcessRig, ProcessRig
from tools.paths import MPY_DIR, cpython_paths, third_party
from tools.device.compile import compile_all
from tools.device import unix32 as unix32_build
from tools.bench.broker import Broker
from e2e import started

cpython_paths()


def pytest_configure(config):
    # A closed terminal (SIGHUP) or a kill (SIGTERM) still stops the brokers and simulators
    # the tests started (tools/bench/children.py), as Ctrl-C and a normal end do.
    children.exit_on_hangup()
    # A run started in the background (`make test &` from a script) inherits SIGINT ignored,
    # and so would every process the tests start: the tests that stop one with a Ctrl-C
    # (evctl watch, make sim) would wait for ever. A handler of ours is reset at exec.
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    config.addinivalue_line("markers", "brokers(*kinds): the kinds of broker the `broker` and "
                            "`module_broker` fixtures start (several: the test runs on each)")
    try:
        third_party()
    except SystemExit as e:  # one line, no traceback
        raise pytest.UsageError(str(e))


def pytest_sessionstart(session):
    # With parallel workers (make test: pytest-xdist), once, before they start: the .mpy
    # tree and both 32-bit images, so that no test waits on a build another worker started
    # and no charger a test launches waits on the build lock past the test's own time limits.
    # (One process alone builds what its tests need, when they need it: the fixtures below.)
    in_worker = hasattr(session.config, "workerinput")
    if in_worker or not session.config.getoption("numprocesses", None):  # -n N
        return
    compile_all(MPY_DIR)
    for image in unix32_build.IMAGES:
        try:
            unix32_build.build(quiet=True, image=image)
        except (unix32_build.Unavailable, unix32_build.BuildError):
            break  # the fixtures below skip or fail with the reason


def pytest_collection_modifyitems(config, items):
    # The real interpreter must be there: a missing binary is a failure, not a skip.
    if shutil.which("micropython") is None or shutil.which("mpy-cross") is None:
        raise pytest.UsageError("micropython / mpy-cross not on PATH: run `make test`")


def pytest_generate_tests(metafunc):
    # A test (or its module, by pytestmark) marked brokers("amqtt", "mosquitto") runs on each.
    kinds = _broker_kinds(metafunc.definition)
    for name, scope in (("broker", "function"), ("module_broker", "module")):
        if len(kinds) > 1 and name in metafunc.fixturenames:
            metafunc.parametrize(name, kinds, indirect=True, scope=scope)


def _broker_kinds(node):
    """The kinds of broker the node's brokers marker names: Broker.preferred() (Mosquitto
    where installed, else amqtt: what make sim starts) where it has none."""
    mark = node.get_closest_marker("brokers")
    return mark.args if mark else (Broker.preferred(),)


def _broker(request):
    b = started(getattr(request, "param", None) or _broker_kinds(request.node)[0])
    yield b
    b.stop()


@pytest.fixture
def broker(request):
    """A started broker of the test's own (the brokers marker says which kind; a Mosquitto
    test skips where it is not installed)."""
    yield from _broker(request)


@pytest.fixture(scope="module")
def module_broker(request):
    """One started broker for a module's tests, where their other fixtures (a service, a
    page) live as long; the brokers marker on the module says which kind."""
    yield from _broker(request)


@pytest.fixture
def api(cloud):
    """An HTTP client of the cloud service with the test key, on the module's `cloud`
    fixture (host_tests/cloud_kit.py)."""
    with cloud.client() as client:
        yield client


@pytest.fixture(scope="module")
def pg():
    """PostgreSQL from Debian's package in a directory of its own, for a module's tests
    (tools/bench/postgres.py); skipped saying what is missing where it cannot start."""
    why = postgres.missing()
    if why:
        pytest.skip(why)
    server = postgres.Postgres(durable=False).start()
    yield server
    server.stop()


@pytest.fixture
def pg_url(pg, request):
    """A fresh database of the module's server, for one test."""
    name = "t_" + "".join(ch if ch.isalnum() else "_" for ch in request.node.name)[:50]
    return pg.create_db(name.lower())


@pytest.fixture(scope="module")
def cluster():
    """Three RabbitMQ nodes with MQTT, clustered, for a module's tests
    (tools/bench/rabbit.py); skipped saying what is missing where they cannot start."""
    why = rabbit.missing()
    if why:
        pytest.skip(why)
    c = rabbit.Cluster(3)
    try:
        c.start()
    except Exception:
        c.stop()
        raise
    yield c
    c.stop()


@pytest.fixture(scope="session")
def mpy_dir():
    """The "wheel" build, ready: the agent, its micropython-lib packages and the boards
    compiled by mpy-cross into MPY_DIR, which the pip wheel's micropython loads."""
    failures = compile_all(MPY_DIR)
    assert not failures, failures
    return "wheel"


@pytest.fixture(scope="session")
def unix32():
    """The "unix32" build (make unix32: 32-bit v1.28.0, the agent frozen), built if needed;
    skipped, saying what to install, where gcc cannot build 32-bit programs."""
    try:
        unix32_build.build(quiet=True)
    except unix32_build.Unavailable as e:
        pytest.skip(str(e))
    return "unix32"


@pytest.fixture(params=["wheel", "unix32"])
def mp_build(request):
    """(build, heap size) for each interpreter: the wheel's micropython (64-bit, the agent
    as .mpy; the caller's default heap) and make unix32's (32-bit, the agent frozen) with
    -X heapsize=56K, an ESP32's initial heap, which never grows."""
    request.getfixturevalue("mpy_dir" if request.param == "wheel" else "unix32")
    return request.param, ("56K" if request.param == "unix32" else None)


@pytest.fixture
def agent_build(mp_build):
    """make sim's options for the agent under mp_build."""
    build, heap = mp_build
    return ["--build", build] + (["--heapsize", heap] if heap else [])


@pytest.fixture(params=["cpython", "micropython"])
def make_rig(request, tmp_path, mpy_dir):
    """A factory: make_rig(**installation) gives a fresh charger on a fresh bench."""
    made = []

    def make(state_dir=None, **kw):
        d = str(state_dir or tmp_path / ("flash%d" % len(made)))
        os.makedirs(d, exist_ok=True)
        if request.param == "cpython":
            rig = InProcessRig(d, **kw)
        else:
            rig = ProcessRig(d, mpy_dir, **kw)
        made.append(rig)
        return rig

    make.interpreter = request.param
    yield make
    for rig in made:
        rig.close()


@pytest.fixture
def rig(make_rig):
    return make_rig()


def duty(rig):
    """The pilot's duty in percent, as the bench measures it."""
    return rig.bench.readings()["pilot"]["dutyPercent"]


def plug(rig, ms=2000, **ev):
    """Connect a vehicle that asks for charge and let the session start."""
    fields = {"connected": True, "request": True}
    fields.update(ev)
    rig.ev(**fields)
    rig.run(ms)
