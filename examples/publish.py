#!/usr/bin/env python3
"""Publishing to ssio from a Python backend, with the standard library only.

The server API must be on: start ssio with --api-key (or SSIO_API_KEY).

    SSIO_API_KEY=secret python3 examples/publish.py http://127.0.0.1:3000 \
        "chat message" '{"text": "hello"}' [--room lobby] [--sid SID] \
        [--idempotency-key order-17]

prints the cursor the publish answered: a page rendered now may open its
stream with ?resume=<cursor> (or Last-Event-ID) and gets every later event
once. `Client` is the part to copy into a backend.
"""

import argparse
import json
import os
import sys
import urllib.error
import urllib.request


class ApiError(Exception):
    """An answer other than 200: its status and the server's reason."""

    def __init__(self, status, message):
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class Client:
    """The server API of one ssio server (any node of a cluster)."""

    def __init__(self, base_url, key, timeout=10):
        self.base_url = base_url.rstrip("/")
        self.key = key
        self.timeout = timeout

    def _call(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.base_url + path,
            data=data,
            method=method,
            headers={
                "Authorization": "Bearer " + self.key,
                "Content-Type": "application/json",
            },
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as res:
                return json.load(res)
        except urllib.error.HTTPError as e:
            try:
                message = json.load(e).get("error", e.reason)
            except ValueError:
                message = e.reason
            raise ApiError(e.code, message) from None

    def publish(self, event, data=None, room=None, sid=None, idempotency_key=None):
        """Sends `event` to everyone, a room or one session; returns the cursor."""
        body = {"event": event, "data": data}
        if room is not None:
            body["room"] = room
        if sid is not None:
            body["sid"] = sid
        if idempotency_key is not None:
            body["idempotency_key"] = idempotency_key
        return self._call("POST", "/api/publish", body)["cursor"]

    def disconnect(self, sid):
        self._call("POST", "/api/disconnect", {"sid": sid})

    def join(self, sid, room):
        self._call("POST", "/api/join", {"sid": sid, "room": room})

    def leave(self, sid, room):
        self._call("POST", "/api/leave", {"sid": sid, "room": room})

    def batch(self, commands):
        """`commands`: [(method, params), ...]; returns one reply each."""
        body = {"commands": [{"method": m, "params": p} for m, p in commands]}
        return self._call("POST", "/api/batch", body)["replies"]

    def rooms(self):
        return self._call("GET", "/api/rooms")["rooms"]

    def info(self):
        return self._call("GET", "/api/info")


def main():
    parser = argparse.ArgumentParser(description="Publish one event to ssio.")
    parser.add_argument("url", help="the server, e.g. http://127.0.0.1:3000")
    parser.add_argument("event")
    parser.add_argument("data", nargs="?", default="null", help="JSON (default null)")
    parser.add_argument("--room")
    parser.add_argument("--sid")
    parser.add_argument("--idempotency-key")
    args = parser.parse_args()
    key = os.environ.get("SSIO_API_KEY", "").split(",")[0]
    if not key:
        sys.exit("set SSIO_API_KEY to one of the server's --api-key values")
    client = Client(args.url, key)
    try:
        cursor = client.publish(
            args.event,
            json.loads(args.data),
            room=args.room,
            sid=args.sid,
            idempotency_key=args.idempotency_key,
        )
    except ApiError as e:
        sys.exit(f"refused: {e}")
    print(cursor)


if __name__ == "__main__":
    main()
