"""What every outside-API client shares: its key, session, timeout, retry policy and body
cap, and one `_request` that sends with all of them, so Datura's and Chutes' clients hold
only what is their own (endpoint, parameters, parsing)."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, ClassVar

import aiohttp
from pydantic import SecretStr

from pipeline.clients.errors import NotConfiguredError
from pipeline.clients.http import HTTPResult, request_json
from pipeline.clients.retry import RetryPolicy
from pipeline.clients.session import SessionOwner


class APIClient(SessionOwner):
    """A client of one outside API, `service`, authorized by the key in `key_setting`.

    Without a key the client is not `configured`: a request raises `NotConfiguredError`
    naming the setting, and nothing is sent. The key goes out as `Authorization:
    {auth_prefix}{key}` and is scrubbed from every error.
    """

    service: ClassVar[str]
    key_setting: ClassVar[str]
    auth_prefix: ClassVar[str] = "Bearer "

    def __init__(
        self,
        api_key: SecretStr | str | None,
        timeout_s: float,
        retry: RetryPolicy | None,
        session: aiohttp.ClientSession | None,
        max_body_bytes: int,
    ) -> None:
        key = api_key.get_secret_value() if isinstance(api_key, SecretStr) else api_key
        self._key = key or None
        self._timeout_s = timeout_s
        self._retry = retry or RetryPolicy()
        self._max_body_bytes = max_body_bytes
        super().__init__(session)

    @property
    def configured(self) -> bool:
        """False without an API key: callers fall back instead of calling."""
        return self._key is not None

    def _require_key(self) -> str:
        if self._key is None:
            raise NotConfiguredError(
                self.service, None, f"{self.key_setting} is not set", retryable=False
            )
        return self._key

    async def _request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, str] | None = None,
        json_body: Any = None,
        trusted_origins: Collection[str] = (),
    ) -> HTTPResult:
        key = self._require_key()
        return await request_json(
            self._get_session(),
            method,
            url,
            service=self.service,
            timeout_s=self._timeout_s,
            policy=self._retry,
            headers={"Authorization": self.auth_prefix + key, "Accept": "application/json"},
            params=params,
            json_body=json_body,
            secrets=(key,),
            trusted_origins=trusted_origins,
            max_body_bytes=self._max_body_bytes,
        )
