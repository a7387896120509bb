"""A FastAPI/uvicorn "ConnectionManager" broadcast server: the peer Switchyard is
compared with (the pattern from FastAPI's WebSocket docs, plus what the
benchmark needs).

- WebSocket `/ws/events?events=alert.*,camera.status_changed`: patterns `*`,
  `domain.*` and exact names; no `events` parameter = receive everything. On
  connect it sends `{"type":"subscribed",...}` like Switchyard.
- `POST /api/events`: one event `{"type","payload","correlation_id"?}` or an
  array; each gets a per-channel sequence (the channel is the type's domain)
  and an RFC 3339 millisecond timestamp at accept, and the same envelope JSON
  as Switchyard is broadcast to every matching subscriber. 202
  `{"accepted":n,"sequences":[{"channel","sequence"}]}`.

No schema validation, history, auth or queues: it is the baseline a team
writes by hand. Run: python fastapi_server.py --port 8091
"""

import argparse
import json
from datetime import datetime, timezone

import uvicorn
from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse


def matches(pattern: str, event_type: str) -> bool:
    if pattern == "*":
        return True
    if pattern.endswith(".*"):
        return event_type.split(".", 1)[0] == pattern[:-2]
    return pattern == event_type


class ConnectionManager:
    def __init__(self) -> None:
        self.active: list[tuple[WebSocket, list[str] | None]] = []

    async def connect(self, websocket: WebSocket, patterns: list[str] | None) -> None:
        await websocket.accept()
        self.active.append((websocket, patterns))

    def disconnect(self, websocket: WebSocket) -> None:
        self.active = [(ws, p) for ws, p in self.active if ws is not websocket]

    async def broadcast(self, event_type: str, message: str) -> None:
        for websocket, patterns in list(self.active):
            if patterns is None or any(matches(p, event_type) for p in patterns):
                try:
                    await websocket.send_text(message)
                except Exception:  # a closed client: forget it
                    self.disconnect(websocket)


app = FastAPI()
manager = ConnectionManager()
sequences: dict[str, int] = {}


def now_rfc3339() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@app.websocket("/ws/events")
async def ws_events(websocket: WebSocket, events: str | None = None) -> None:
    patterns = None if events is None else [p for p in events.split(",") if p]
    await manager.connect(websocket, patterns)
    await websocket.send_text(
        json.dumps({"type": "subscribed", "action": "subscribed", "events": patterns, "warnings": []})
    )
    try:
        while True:
            text = await websocket.receive_text()
            try:
                msg = json.loads(text)
            except ValueError:
                continue
            if isinstance(msg, dict) and "ping" in (msg.get("action"), msg.get("type")):
                await websocket.send_text(json.dumps({"type": "pong", "timestamp": now_rfc3339()}))
    except WebSocketDisconnect:
        manager.disconnect(websocket)


@app.post("/api/events")
async def publish(request: Request) -> JSONResponse:
    try:
        body = await request.json()
    except ValueError:
        return JSONResponse({"error": {"code": "invalid_json"}}, status_code=400)
    events = body if isinstance(body, list) else [body]
    stamped, out = [], []
    for event in events:
        event_type = event.get("type") if isinstance(event, dict) else None
        if not isinstance(event_type, str) or "." not in event_type:
            return JSONResponse({"error": {"code": "invalid_payload"}}, status_code=422)
        channel = event_type.split(".", 1)[0]
        sequence = sequences.get(channel, 0) + 1
        sequences[channel] = sequence
        envelope = {
            "type": event_type,
            "payload": event.get("payload", {}),
            "timestamp": now_rfc3339(),
            "channel": channel,
            "sequence": sequence,
        }
        if event.get("correlation_id") is not None:
            envelope["correlation_id"] = event["correlation_id"]
        stamped.append((event_type, json.dumps(envelope, separators=(",", ":"))))
        out.append({"channel": channel, "sequence": sequence})
    for event_type, message in stamped:
        await manager.broadcast(event_type, message)
    return JSONResponse({"accepted": len(out), "sequences": out}, status_code=202)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8091)
    args = parser.parse_args()
    uvicorn.run(
        app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False, timeout_keep_alive=65
    )
