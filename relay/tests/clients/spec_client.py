"""The specification's Python client (class as in the API reference), run against a relay.

Usage: spec_client.py WS_URL
Prints each received message as one JSON line; exits 0 once `handshake_response`
(accepted) and then a `health` message arrived, 1 otherwise (10 s budget).
"""
import asyncio
import json
import sys

import websockets


class SdkRelayClient:
    def __init__(self, url):
        self.url = url
        self.websocket = None

    async def connect(self):
        self.websocket = await websockets.connect(self.url)
        await self.send_handshake()

    async def send_handshake(self):
        handshake = {
            "type": "handshake",
            "client_id": "python-client",
            "version": "1.0.0",
            "capabilities": ["sync", "notifications"],
        }
        await self.websocket.send(json.dumps(handshake))

    async def listen(self):
        async for message in self.websocket:
            data = json.loads(message)
            print(json.dumps(data), flush=True)
            yield data

    async def close(self):
        if self.websocket:
            await self.websocket.close()


async def main(url):
    client = SdkRelayClient(url)
    await client.connect()
    seen = []
    async for data in client.listen():
        seen.append(data["type"])
        if seen[0] != "handshake_response":
            return 1
        if data["type"] == "handshake_response" and data["status"] != "accepted":
            return 1
        if data["type"] == "health":
            await client.close()
            return 0
    return 1


if __name__ == "__main__":
    sys.exit(asyncio.run(asyncio.wait_for(main(sys.argv[1]), timeout=10)))
