"""A wallet that resumes its session on any relay of the mesh with a resume token.

Usage:
  resume_wallet.py WS_URL listen TYPES COUNT
      handshakes with capability `resume`, subscribes to TYPES (comma-separated), prints
      each of COUNT notifications, then disconnects.
  resume_wallet.py WS_URL resume TOKEN LINGER_SECONDS
      handshakes with capability `resume`, sends {"type":"resume","token":TOKEN}, prints
      every message up to `resumed` (or an `error`), then everything for LINGER_SECONDS.
Prints one JSON line per event, flushed at once:
  {"event": "notification", "message_id": M, "notification_type": T, "resume_token": R}
  {"event": "resumed", "recovered": B, "replayed": N, "reason": R}
  {"event": "error", "code": C, "message": M}
  {"event": "subscriptions", "notification_types": [...]}
Every network wait has a timeout; exits 0 when done, 2 on a timeout.
"""
import asyncio
import json
import sys

import websockets

WAIT = 20


def emit(**event):
    print(json.dumps(event), flush=True)


async def handshake(ws):
    await ws.send(json.dumps({"type": "handshake", "client_id": "resume-wallet",
                              "version": "1.0.0", "capabilities": ["resume"]}))
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
        if message.get("type") == "handshake_response":
            assert message["status"] == "accepted", message
            return


def report(message):
    kind = message.get("type")
    if kind == "notification":
        emit(event="notification", message_id=message["message_id"],
             notification_type=message["notification_type"],
             resume_token=message.get("resume_token"))
    elif kind == "resumed":
        emit(event="resumed", recovered=message["recovered"],
             replayed=message["replayed"], reason=message.get("reason"))
    elif kind == "error":
        emit(event="error", code=message["code"], message=message["message"])
    elif kind == "subscriptions":
        emit(event="subscriptions", notification_types=message["notification_types"])
    return kind


async def listen(url, types, count):
    async with websockets.connect(url, open_timeout=WAIT, close_timeout=5) as ws:
        await handshake(ws)
        await ws.send(json.dumps({"type": "subscribe",
                                  "notification_types": types.split(",")}))
        seen = 0
        while seen < count:
            message = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
            if report(message) == "notification":
                seen += 1


async def resume(url, token, linger):
    async with websockets.connect(url, open_timeout=WAIT, close_timeout=5) as ws:
        await handshake(ws)
        await ws.send(json.dumps({"type": "resume", "token": token}))
        while True:
            message = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
            if report(message) in ("resumed", "error"):
                break
        try:
            async with asyncio.timeout(linger):
                async for raw in ws:
                    report(json.loads(raw))
        except TimeoutError:
            pass


def main():
    url, mode = sys.argv[1], sys.argv[2]
    try:
        if mode == "listen":
            asyncio.run(listen(url, sys.argv[3], int(sys.argv[4])))
        else:
            asyncio.run(resume(url, sys.argv[3], float(sys.argv[4])))
    except TimeoutError:
        emit(event="timeout")
        sys.exit(2)


if __name__ == "__main__":
    main()
