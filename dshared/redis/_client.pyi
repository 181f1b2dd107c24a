from typing import Any

from dshared._errors import DsharedError

__all__ = ["ServerConnectionError", "Config", "Client", "resp"]

def resp(*args: bytes) -> bytes: ...

class ServerConnectionError(DsharedError, ConnectionError): ...

class Config:
    url: str
    tls: bool
    unix: str | None
    host: str
    port: int
    user: str | None
    password: str | None
    db: int
    lease_ms: int
    timeout: float
    near_cache: bool
    near_cache_items: int
    def __init__(self, url: str) -> None: ...
    def safe_url(self) -> str: ...
    def connect(self, timeout: float | None = None) -> Any: ...

class Client:
    cfg: Config
    def __init__(self, cfg: Config) -> None: ...
    def conn(self) -> Any: ...
    def call(self, *args: Any) -> Any: ...
    def callp(self, data: bytes) -> Any: ...
    def close(self) -> None: ...
