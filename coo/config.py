"""Where the API is and which key to send: an explicit value, else ``COO_API_URL`` / ``COO_API_KEY``,
else the development key ``coo up`` writes to ``<COO_DATA_DIR>/dev-api-key`` (``.coo`` by default)."""

from __future__ import annotations

import os
from pathlib import Path

import httpx

DEFAULT_API_URL = "http://127.0.0.1:8000"
DEFAULT_DATA_DIR = Path(".coo")
DEV_KEY_FILE = "dev-api-key"


def dev_api_key(data_dir: Path) -> str | None:
    """The development key ``coo up`` left in ``data_dir``, if it is there."""
    path = data_dir / DEV_KEY_FILE
    if not path.exists():
        return None
    return path.read_text().strip() or None


def default_base_url() -> str:
    return os.environ.get("COO_API_URL") or DEFAULT_API_URL


def default_api_key() -> str | None:
    """``COO_API_KEY``, else the development key in ``COO_DATA_DIR`` (default ``.coo``)."""
    key = os.environ.get("COO_API_KEY")
    if key:
        return key
    return dev_api_key(Path(os.environ.get("COO_DATA_DIR") or DEFAULT_DATA_DIR))


DEFAULT_TIMEOUT_S = 30.0
RATE_LIMIT_PATIENCE_S = 60.0  # a 429 is retried while the waits add up to at most this
WAIT_TIMEOUT_S = 600.0
RECONNECT_PATIENCE_S = 120.0  # an event stream that cannot reconnect for this long gives up


def auth_headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def stream_timeout(timeout_s: float) -> httpx.Timeout:
    """An event stream may be quiet for long: no read deadline, the others as usual."""
    return httpx.Timeout(timeout_s, read=None)
