"""Helpers shared by the serving tests: encoded test images and raw HTTP calls (http.client, no extra deps)."""
from __future__ import annotations

import base64
import http.client
import io
import json
from urllib.parse import urlsplit

import numpy as np


def png_bytes(seed: int, w: int = 32, h: int = 32) -> bytes:
    from PIL import Image

    a = np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a, mode="RGB").save(buf, format="PNG")
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def post(url: str, path: str, body: bytes | dict, headers: dict | None = None, timeout: float = 60.0):
    """POST raw bytes (or a dict as JSON) with http.client → (status, parsed JSON body, response headers)."""
    u = urlsplit(url)
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        conn.request("POST", path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
        r = conn.getresponse()
        raw = r.read()
        return r.status, json.loads(raw) if raw else None, dict(r.getheaders())
    finally:
        conn.close()


def get(url: str, path: str, headers: dict | None = None):
    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    try:
        conn.request("GET", path, headers=headers or {})
        r = conn.getresponse()
        return r.status, json.loads(r.read())
    finally:
        conn.close()
