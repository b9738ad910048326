"""A local Datura/Desearch tweet search: `GET /twitter`, raw key in `Authorization`.

Answers like the real service (../shared/api-samples/README.md): a bare JSON
array of tweets with cost headers; 401 `{"detail"}` for a missing or wrong key
(a `Bearer ` prefix is a wrong key); 422 FastAPI validation body without
`query`; the 402 out-of-credit body; 429/500/503 when scripted.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from tests.fakes import FakeServer, Reply, load_sample

DEFAULT_KEY = "dt_test_key_0123456789"

_SEARCH_200: list[dict[str, Any]] = [
    {
        "user": {"id": "1", "username": "subnet_watcher", "name": "Subnet Watcher"},
        "id": "1892527552029499853",
        "text": "Netuid 18 keeps shipping: new validators online and emissions climbing. Bullish.",
        "reply_count": 3,
        "retweet_count": 5,
        "like_count": 42,
        "url": "https://x.com/subnet_watcher/status/1892527552029499853",
        "created_at": "Thu Feb 20 10:51:44 +0000 2025",
        "lang": "en",
    },
    {
        "user": {"id": "2", "username": "tao_skeptic", "name": "Tao Skeptic"},
        "id": "1892530000000000001",
        "text": "Not convinced by Netuid 18 after the last outage, miners are leaving.",
        "like_count": 7,
        "created_at": "Thu Feb 20 11:02:10 +0000 2025",
        "lang": "en",
    },
]
_ERROR_402 = {"error": "Insufficient balance", "required_cents": 0.045, "current_balance_cents": 0}
_ERROR_422 = {
    "detail": [
        {"type": "missing", "loc": ["query", "query"], "msg": "Field required", "input": None}
    ]
}


def sample_tweets() -> list[dict[str, Any]]:
    """The sample search result (a fresh copy each call)."""
    tweets: list[dict[str, Any]] = load_sample("datura_search_200.json", _SEARCH_200)
    return tweets


def error_body(status: int) -> Any:
    """What the real service answers with `status` (a str means a text/plain body)."""
    if status == 401:
        return {"detail": "Invalid API key"}
    if status == 402:
        return load_sample("datura_402.json", _ERROR_402)
    if status == 422:
        return load_sample("datura_422.json", _ERROR_422)
    if status == 429:
        return {"detail": "Too many requests, slow down"}
    if status == 500:
        return "Internal Server Error"
    return {"detail": f"HTTP {status}"}


class FakeDatura(FakeServer):
    """Tweet search fake. `tweets` is the default result; `set_tweets(..., query=)` per query."""

    def __init__(self, api_key: str = DEFAULT_KEY, tweets: list[dict[str, Any]] | None = None):
        super().__init__()
        self.api_key = api_key
        self.tweets: list[dict[str, Any]] = tweets if tweets is not None else sample_tweets()
        self.tweets_by_query: dict[str, list[dict[str, Any]]] = {}
        self.cost_usd = "0.0003"

    def set_tweets(self, tweets: list[dict[str, Any]], *, query: str | None = None) -> None:
        if query is None:
            self.tweets = tweets
        else:
            self.tweets_by_query[query] = tweets

    @property
    def searches(self) -> list[str]:
        """The `query` parameter of every request, in order."""
        return [r.query.get("query", "") for r in self.requests]

    def build_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/twitter", self._search)
        return app

    async def _search(self, request: web.Request) -> web.Response:
        await self.record(request)
        reply = self.next_reply()
        await self.wait(reply)
        if reply.redirect_to is not None:
            return self.redirect(request, reply)
        if reply.check_auth:
            key = request.headers.get("Authorization")
            if not key:
                return self.respond(401, {"detail": "Missing API key"}, reply)
            if key != self.api_key:
                return self.respond(401, {"detail": "Invalid API key"}, reply)
        query = request.query.get("query")
        if not query:
            return self.respond(422, error_body(422), reply)
        count_raw = request.query.get("count", "20")
        if not count_raw.isdigit() or not 1 <= int(count_raw) <= 100:
            detail = [
                {
                    "type": "int_parsing",
                    "loc": ["query", "count"],
                    "msg": "Input should be a valid integer between 1 and 100",
                    "input": count_raw,
                }
            ]
            return self.respond(422, {"detail": detail}, reply)
        if reply.status != 200:
            body = reply.body if reply.body is not None else error_body(reply.status)
            return self.respond(reply.status, body, reply)
        if reply.body is not None:
            body = reply.body
        else:
            body = self.tweets_by_query.get(query, self.tweets)[: int(count_raw)]
        headers = {
            "X-Desearch-Cost-Usd": self.cost_usd,
            "X-Desearch-Usage-Count": str(len(body) if isinstance(body, list) else 0),
            **reply.headers,
        }
        return self.respond(200, body, Reply(headers=headers, text=reply.text))
