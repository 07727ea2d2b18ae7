"""The WebSocket client choice, measured (docs/design.md: OCPP): the project's ws_client.py
against micropython-lib aiohttp's ws_connect (the pinned 0.0.7), each under micropython as
.mpy: heap once imported and once connected, the code's size, and what each does with a
100 KB message in a 56 KB heap. Usage: python -m tools.measure.ws_clients
"""
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading

import websockets

from tools.bench.broker import free_port
from tools.paths import ROOT, firmware_sources

AIOHTTP = os.path.join(os.path.dirname(ROOT), "shared", "third_party", "micropython-lib",
                       "python-ecosys", "aiohttp", "aiohttp")
PROBE = os.path.join(ROOT, "tools", "measure", "probes", "ws_probe.py")
HUGE = '[2,"big","DataTransfer",{"vendorId":"x","data":"%s"}]' % ("x" * 100000)


def serve(port, huge):
    async def handler(ws):
        try:
            async for _ in ws:
                await ws.send('[3,"1",{"currentTime":"2026-11-24T10:00:00Z"}]')
                if huge:
                    await ws.send(HUGE)
        except websockets.ConnectionClosed:  # the probe ends without a closing handshake
            pass

    async def main():
        async with websockets.serve(handler, "127.0.0.1", port, subprotocols=["ocpp1.6"],
                                    max_size=2 ** 20):
            await asyncio.Future()
    threading.Thread(target=asyncio.run, args=(main(),), daemon=True).start()


def compile_to(out):
    """Both clients as .mpy, and their sizes: {name: (source bytes, .mpy bytes)}."""
    sizes = {}
    os.makedirs(os.path.join(out, "aiohttp"))
    for name, sources in (("ws_client.py", [firmware_sources()["ws_client"]]),
                          ("aiohttp 0.0.7", [os.path.join(AIOHTTP, f)
                                             for f in ("__init__.py", "aiohttp_ws.py")])):
        src = mpy = 0
        for path in sources:
            dst = os.path.join(out, "aiohttp" if "aiohttp" in name else "",
                               os.path.basename(path)[:-3] + ".mpy")
            subprocess.run(["mpy-cross", "-o", dst, path], check=True)
            src += os.path.getsize(path)
            mpy += os.path.getsize(dst)
        sizes[name] = (src, mpy)
    return sizes


def probe(lib, mode, port, heap):
    env = dict(os.environ, MICROPYPATH=".frozen:" + lib)
    res = subprocess.run(["micropython", "-X", "heapsize=" + heap, PROBE, mode,
                          "ws://127.0.0.1:%d/ocpp/cp" % port], capture_output=True, text=True,
                         timeout=60, env=env)
    lines = res.stdout.strip().splitlines()
    return json.loads(lines[-1]) if lines else {"error": res.stderr.strip()[-200:]}


def main():
    if not os.path.isdir(AIOHTTP):
        print("ws_clients: %s not found (../shared/third_party)" % AIOHTTP, file=sys.stderr)
        return 1
    plain, huge = free_port(), free_port()
    serve(plain, False)
    serve(huge, True)
    with tempfile.TemporaryDirectory() as lib:
        sizes = compile_to(lib)
        print("| client | source / .mpy | heap imported | heap connected | 100 KB message, "
              "56 KB heap |")
        print("|---|---|---|---|---|")
        for name, mode in (("ws_client.py", "own"), ("aiohttp 0.0.7", "aiohttp")):
            r = probe(lib, mode, plain, "256K")
            big = probe(lib, mode, huge, "56K")
            print("| %s | %.1f / %.1f KB | %.1f KB | %.1f KB | %s |" % (
                name, sizes[name][0] / 1024, sizes[name][1] / 1024, r["imported"] / 1024,
                r["connected"] / 1024, big.get("next", big.get("error"))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
