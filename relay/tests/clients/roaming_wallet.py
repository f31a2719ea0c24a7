"""A wallet that follows the relay's `reconnect` message, as a real wallet should.

Usage: roaming_wallet.py WS_URL SECONDS [--publish]
Connects and handshakes (capabilities `notifications`, and `publish` with --publish),
then prints one JSON line per event, flushed at once:
  {"event": "connected", "url": U}
  {"event": "reconnect", "url": U, "relays": [...], "resume_token": null, "reason": R}
  {"event": "closed", "url": U, "code": C}
  {"event": "notification", "url": U, "message_id": M}
  {"event": "ack", "url": U, "message_id": M}
  {"event": "connect_failed", "url": U, "error": E}
When the relay closes it after a `reconnect`, it dials a relay from that list (in a
random order, never the one that closed it); a close without a `reconnect` first makes
it dial the same URL again. With --publish it publishes a notification every 100 ms
while connected. Exits 0 after SECONDS.
"""
import asyncio
import json
import random
import sys

import websockets


def emit(**event):
    print(json.dumps(event), flush=True)


async def session(url, publish):
    """One connection; returns the relays of a `reconnect` received on it (or None)."""
    relays = None
    capabilities = ["notifications"] + (["publish"] if publish else [])
    async with websockets.connect(url, open_timeout=5, close_timeout=5) as ws:
        await ws.send(json.dumps({"type": "handshake", "client_id": "roaming",
                                  "version": "1.0.0", "capabilities": capabilities}))
        emit(event="connected", url=url)

        async def publisher():
            n = 0
            while True:
                n += 1
                await ws.send(json.dumps({"type": "notification",
                                          "notification_type": "roll",
                                          "data": {"n": n}}))
                await asyncio.sleep(0.1)

        task = asyncio.create_task(publisher()) if publish else None
        try:
            async for raw in ws:
                message = json.loads(raw)
                kind = message.get("type")
                if kind == "reconnect":
                    relays = message["relays"]
                    emit(event="reconnect", url=url, relays=relays,
                         resume_token=message.get("resume_token", "absent"),
                         reason=message.get("reason"))
                elif kind == "notification":
                    emit(event="notification", url=url, message_id=message["message_id"])
                elif kind == "notification_ack":
                    emit(event="ack", url=url, message_id=message["message_id"])
        except websockets.ConnectionClosed:
            pass
        finally:
            if task:
                task.cancel()
        code = ws.close_code
    emit(event="closed", url=url, code=code)
    return relays


async def roam(url, publish):
    while True:
        try:
            relays = await session(url, publish)
        except (OSError, asyncio.TimeoutError, websockets.WebSocketException) as error:
            emit(event="connect_failed", url=url, error=str(error))
            relays = None
            await asyncio.sleep(0.2)
        if relays:
            choices = [r for r in relays if r != url]
            random.shuffle(choices)
            url = choices[0] if choices else url
        else:
            await asyncio.sleep(0.2)


async def main(url, seconds, publish):
    try:
        await asyncio.wait_for(roam(url, publish), timeout=seconds)
    except asyncio.TimeoutError:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1], float(sys.argv[2]), "--publish" in sys.argv[3:])))
