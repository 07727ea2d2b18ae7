# What a WebSocket client costs in the heap under micropython, and what it does with an
# oversized message: imports it, connects to URL with subprotocol ocpp1.6, sends a Heartbeat
# CALL, reads the answer, then reads one more message (the server may send a huge one).
# MODE "own": firmware/ocpp16/ws_client.py, blocking; "aiohttp": micropython-lib aiohttp's
# ws_connect, in an asyncio loop of its own thread (as the agent would have to run it).
#   micropython -X heapsize=56K ws_probe.py MODE URL
import gc
import json
import sys
import time
import _thread

mode, url = sys.argv[1], sys.argv[2]
gc.collect()
base = gc.mem_alloc()
out = {"mode": mode}
call = '[2,"1","Heartbeat",{}]'
if mode == "own":
    import select
    import ws_client
    gc.collect()
    out["imported"] = gc.mem_alloc() - base
    ws = ws_client.connect(url, "ocpp1.6", [("Authorization", "Basic eDp5")])
    p = select.poll()
    p.register(ws.sock, select.POLLIN)
    ws.send_text(call.encode())
    p.poll(5000)
    out["answer"] = len(ws.recv())
    gc.collect()
    out["connected"] = gc.mem_alloc() - base
    if p.poll(3000):
        try:
            m = ws.recv()
            out["next"] = "too large (%d bytes), drained" % m.size \
                if isinstance(m, ws_client.TooLarge) else "%d bytes" % len(m)
        except Exception as e:
            out["next"] = repr(e)
else:
    import asyncio
    import aiohttp
    gc.collect()
    out["imported"] = gc.mem_alloc() - base
    done = []

    async def main():
        session = aiohttp.ClientSession(headers={"Sec-WebSocket-Protocol": "ocpp1.6",
                                                 "Authorization": "Basic eDp5"})
        async with session.ws_connect(url) as ws:
            await ws.send_str(call)
            out["answer"] = len(await ws.receive_str())
            gc.collect()
            out["connected"] = gc.mem_alloc() - base
            try:
                m = await asyncio.wait_for(ws.receive_str(), 3)
                out["next"] = "%d bytes" % len(m)
            except Exception as e:
                out["next"] = repr(e)

    def run():
        try:
            asyncio.run(main())
        except Exception as e:
            out["next"] = repr(e)
        done.append(1)
    _thread.start_new_thread(run, ())
    while not done:
        time.sleep(0.05)
print(json.dumps(out))
