"""The service's command line (docs/cloud.md, "Starting it"):

  python -m tools.cloud serve --broker HOST:PORT --db URL [--port 8080] [--api-key K]
  python -m tools.cloud keys add --db URL [--name N] [--device ID ...] [--key K]
  python -m tools.cloud keys list --db URL
  python -m tools.cloud keys revoke --db URL KEY_ID
  python -m tools.cloud migrate --db URL

--db is a SQLite file (the embedded default) or postgresql://USER:PASS@HOST/DB. `serve` and
`keys` migrate the database first (alembic upgrade head): the migrations are the schema.
"""
import argparse
import asyncio
import json
import logging
import socket
import sys

from sqlalchemy.exc import IntegrityError

from tools.cloud import keys as api_keys
from tools.cloud import bridge, sender, store, tiers
from tools.cloud.app import WRITE_WAIT_S
from tools.client import tls_context
from tools.paths import cpython_paths

cpython_paths()
import topics  # noqa: E402


def _addresses(text):
    try:
        bridge.addresses(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e))
    return text


def _seconds(text):
    try:
        value = float(text)
    except ValueError:
        value = -1
    if not 0 < value <= 86400:
        raise argparse.ArgumentTypeError("%r is not a duration in seconds" % text)
    return value


def _key(text):
    problem = api_keys.check_own(text)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return text


def parser():
    p = argparse.ArgumentParser(prog="python -m tools.cloud", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="serve the API for every charger on a broker")
    s.add_argument("--broker", type=_addresses, required=True, metavar="HOST:PORT[,HOST:PORT]",
                   help="the broker, or a cluster's nodes: on a lost connection the service "
                   "moves to the next")
    s.add_argument("--db", required=True, help="a SQLite file, or postgresql://...")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8080)
    s.add_argument("--prefix", default=topics.PREFIX, help="the chargers' topic prefix")
    s.add_argument("--api-key", type=_key, help="make sure this key exists (every charger)")
    s.add_argument("--client-id", help="the MQTT client id (default evse-cloud-HOST-PORT; "
                   "each replica needs its own)")
    s.add_argument("--username")
    s.add_argument("--password")
    s.add_argument("--ca", help="CA certificate (PEM or DER) of a TLS broker")
    s.add_argument("--live-wait", type=_seconds, default=tiers.LIVE_WAIT_S,
                   help="s a live read waits for the charger (default %(default)s)")
    s.add_argument("--write-wait", type=_seconds, default=WRITE_WAIT_S,
                   help="s a write waits for the charger's reply, then 504 (default %(default)s)")
    s.add_argument("--cache-ttl", type=_seconds, default=tiers.CACHE_TTL_S)
    s.add_argument("--expedite-ttl", type=_seconds, default=tiers.EXPEDITE_TTL_S)
    s.add_argument("--webhook-timeout", type=_seconds, default=sender.TIMEOUT_S,
                   help="s one webhook attempt may take (default %(default)s)")
    s.add_argument("--retry-first", type=_seconds, default=sender.BACKOFF_FIRST_S,
                   help="s before the first webhook retry, doubling after (default %(default)s)")
    s.add_argument("--stale-after", type=_seconds, default=bridge.STALE_S,
                   help="s without a word from a charger said to be online before it is taken "
                   "offline (default %(default)s: 2.5 of mqtt.md's 60 s heartbeats)")
    s.add_argument("--log-level", default="warning")
    m = sub.add_parser("migrate", help="alembic upgrade head, and nothing else")
    m.add_argument("--db", required=True)
    k = sub.add_parser("keys", help="API keys")
    ks = k.add_subparsers(dest="keys_cmd", required=True)
    a = ks.add_parser("add", help="make a key and print it (shown once)")
    a.add_argument("--db", required=True)
    a.add_argument("--name", default="")
    a.add_argument("--device", action="append", help="a charger it may see (repeat; default: "
                   "every charger)")
    a.add_argument("--key", type=_key, help="use this key instead of a random one")
    ls = ks.add_parser("list", help="the keys (never the keys themselves)")
    ls.add_argument("--db", required=True)
    r = ks.add_parser("revoke")
    r.add_argument("--db", required=True)
    r.add_argument("key_id")
    return p


async def _with_store(url, job):
    s = store.Store(url)
    try:
        return await job(s)
    finally:
        await s.close()


async def ensure_key(s, key):
    """The key's id; made (for every charger) if the database does not hold it yet. Replicas
    starting together with the same key: one adds it, the others find it."""
    found = await s.key_by_hash(api_keys.digest(key))
    if found:
        return found[0]
    try:
        return (await api_keys.add(s, "serve --api-key", None, key))[0]
    except IntegrityError:  # another replica added it since
        found = await s.key_by_hash(api_keys.digest(key))
        if not found:
            raise
        return found[0]


def serve(a, url):
    import uvicorn
    from tools.cloud.service import Service
    if a.api_key:
        asyncio.run(_with_store(url, lambda s: ensure_key(s, a.api_key)))
    svc = Service(url, a.broker, a.prefix, a.client_id or "evse-cloud-%s-%d" % (
        socket.gethostname(), a.port), a.live_wait, a.write_wait, a.cache_ttl, a.expedite_ttl,
        a.webhook_timeout, a.retry_first, a.username, a.password,
        tls_context(a.ca) if a.ca else None, a.stale_after)
    print("cloud: serving http://%s:%d (broker %s, database %s)" % (
        a.host, a.port, a.broker, url.split("@")[-1]), flush=True)
    uvicorn.run(svc.app, host=a.host, port=a.port, log_level=a.log_level,
                timeout_keep_alive=30, limit_concurrency=2000, timeout_graceful_shutdown=3,
                access_log=False)
    return 0


def main(argv=None):
    a = parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    logging.getLogger("cloud").setLevel(logging.INFO)
    url = store.url_of(a.db)
    store.migrate(url)
    if a.cmd == "migrate":
        return 0
    if a.cmd == "serve":
        return serve(a, url)
    if a.keys_cmd == "add":
        key_id, key = asyncio.run(_with_store(url, lambda s: api_keys.add(
            s, a.name, a.device, a.key)))
        print("key %s: %s" % (key_id, key))
        print("(shown once; the database keeps only its hash)", file=sys.stderr)
    elif a.keys_cmd == "list":
        for k in asyncio.run(_with_store(url, lambda s: s.keys())):
            print(json.dumps({"id": k["id"], "name": k["name"], "devices": k["devices"] if not
                              k["all_devices"] else "all", "revoked": k["revoked_at"] is not None}))
    elif a.keys_cmd == "revoke":
        if not asyncio.run(_with_store(url, lambda s: s.revoke_key(a.key_id))):
            print("no such key (or revoked already): %s" % a.key_id, file=sys.stderr)
            return 1
    return 0
