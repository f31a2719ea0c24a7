"""Measures the resume replay rate of a running relay.

Usage: resume_replay.py WS_URL COUNT
A wallet with capability `resume` takes one notification (and its token) and leaves;
COUNT notifications are published; the wallet resumes with its token and this prints
how many were replayed and how fast (from sending `resume` to `resumed`). The relay
needs `[limits] ws_outbound_queue_max` above 2 x COUNT (a replay fills at most half
the queue) and COUNT notifications within 8 MiB.
"""
import asyncio
import json
import sys
import time

import websockets

HELLO = {"type": "handshake", "client_id": "bench", "version": "1.0.0"}


async def main(url, count):
    async with websockets.connect(url, max_size=None) as wallet, \
            websockets.connect(url, max_size=None) as publisher:
        await wallet.send(json.dumps({**HELLO, "capabilities": ["resume"]}))
        await wallet.send(json.dumps({"type": "subscribe", "notification_types": ["pay"]}))
        while json.loads(await asyncio.wait_for(wallet.recv(), 10))["type"] != "subscriptions":
            pass
        await publisher.send(json.dumps({**HELLO, "capabilities": ["publish"]}))
        note = {"type": "notification", "notification_type": "pay",
                "data": {"txid": "ab" * 32, "amount": 1000}}
        await publisher.send(json.dumps(note))
        token = None
        while token is None:
            m = json.loads(await asyncio.wait_for(wallet.recv(), 10))
            token = m.get("resume_token")
    async with websockets.connect(url, max_size=None) as publisher:
        await publisher.send(json.dumps({**HELLO, "capabilities": ["publish"]}))
        for _ in range(count):
            await publisher.send(json.dumps(note))
        acks = 0
        while acks < count:
            m = json.loads(await asyncio.wait_for(publisher.recv(), 30))
            acks += m.get("type") == "notification_ack"
    async with websockets.connect(url, max_size=None) as wallet:
        await wallet.send(json.dumps({**HELLO, "capabilities": ["resume"]}))
        m = json.loads(await asyncio.wait_for(wallet.recv(), 10))
        started = time.perf_counter()
        await wallet.send(json.dumps({"type": "resume", "token": token}))
        received = 0
        while True:
            m = json.loads(await asyncio.wait_for(wallet.recv(), 60))
            if m["type"] == "notification":
                received += 1
            elif m["type"] == "resumed":
                break
        elapsed = time.perf_counter() - started
    print(json.dumps({"resumed": m, "received": received, "seconds": round(elapsed, 3),
                      "per_second": round(received / elapsed)}))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
