"""Cache hits of GET /api/v1/tao_dividends answered before FastAPI's routing.

The design budget says a cache hit should cost close to a bare endpoint. Going
through FastAPI's dependency resolution and response validation costs several
times that, so requests that are certainly cache hits are answered here with
the same semantics and the same builders as the router:

- the token is already known valid in this process (static, or a stored token
  checked recently), its scopes allow the request by the router's own rule
  (`gateway.scopes`; a refusal falls through so the router answers the 403),
  and the rate limits allow the request;
- the query is well-formed (anything unusual falls through, so every error
  answer still comes from the router);
- the answer is in the in-process cache, and with trade on, this process knows
  the pair is inside its cooldown (so nothing would be enqueued).

Anything else returns None and the request takes the normal path.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from gateway.dividends.presenter import dividends_body
from gateway.metrics import CACHE_LOOKUPS, FASTPATH_HITS, TRADES
from gateway.scopes import READ, InsufficientScope, trade_wanted
from gateway.state import AppState
from gateway.trades.presenter import trade_fields
from shared.ss58 import normalize_ss58

PATH = "/api/v1/tao_dividends"
_TRUE = {"true", "1"}
_FALSE = {"false", "0"}


Query = tuple[int | None, str | None, bool | None]
_MAX_REMEMBERED = 4096
_MAX_REMEMBERED_QUERY = 160  # netuid, a 48-character hotkey and trade fit in well under this
_parsed: dict[bytes, Query | None] = {}
# Serialized bodies by (query, cache stamp, trade id, cooldown seconds): a hit re-serves bytes.
_bodies: dict[tuple[bytes, float, str | None, int | None], bytes] = {}


def parse_query(raw: bytes) -> Query | None:
    """(netuid, hotkey, trade) of a plainly valid query, else None; remembered per query string."""
    try:
        return _parsed[raw]
    except KeyError:
        pass
    query = _parse(raw)
    if len(raw) > _MAX_REMEMBERED_QUERY:
        return query  # a plain query is short; a long one is never worth keeping
    if len(_parsed) >= _MAX_REMEMBERED:
        _parsed.clear()
    _parsed[raw] = query
    return query


def _parse(raw: bytes) -> Query | None:
    try:
        pairs = parse_qsl(raw.decode("ascii"), keep_blank_values=True, strict_parsing=bool(raw))
    except (UnicodeDecodeError, ValueError):
        return None
    seen = dict(pairs)
    if len(seen) != len(pairs) or not seen.keys() <= {"netuid", "hotkey", "trade"}:
        return None
    netuid = hotkey = trade = None
    if "netuid" in seen:
        text = seen["netuid"]
        if not (text.isdigit() and text.isascii() and len(text) <= 5 and int(text) <= 65535):
            return None
        netuid = int(text)
    if "hotkey" in seen:
        hotkey = seen["hotkey"]
        try:
            if normalize_ss58(hotkey) != hotkey:
                return None  # another spelling of the account: the router normalizes it
        except ValueError:
            return None
    if "trade" in seen:
        flag = seen["trade"].lower()
        if flag not in _TRUE | _FALSE:
            return None
        trade = flag in _TRUE
    return netuid, hotkey, trade


def serve(
    state: AppState, method: str, query_string: bytes, authorization: str | None
) -> bytes | None:
    """The JSON body of a certain cache hit, or None to take the normal path."""
    if method != "GET":
        return None
    # The token first: nothing of a request that fails auth is parsed or remembered.
    caller = state.auth.known(authorization)
    if caller is None or READ not in caller.scopes:
        return None
    query = parse_query(query_string)
    if query is None:
        return None
    netuid, hotkey, trade = query
    settings = state.settings
    try:
        do_trade = trade_wanted(caller, trade, trade_by_default=settings.trade_by_default)
    except InsufficientScope:
        return None
    trade_netuid = settings.default_netuid if netuid is None else netuid
    trade_hotkey = hotkey or settings.default_hotkey
    result = state.trades.peek(trade_netuid, trade_hotkey) if do_trade else None
    if do_trade and result is None:
        return None
    stamp = state.dividends.stamp(netuid, hotkey)
    if stamp is None:
        return None
    subject = caller.owner  # the router's rate-limit subject (gateway.deps)
    limiter = state.limiter
    if not limiter.available(subject, "read", settings.rate_limit_per_min) or (
        do_trade and not limiter.available(subject, "trade", settings.trade_rate_limit_per_min)
    ):
        return None  # the router answers 429 and counts it once
    limiter.allow(subject, "read", settings.rate_limit_per_min)
    if do_trade:
        limiter.allow(subject, "trade", settings.trade_rate_limit_per_min)
        TRADES.labels("cooldown").inc()
    memo_key = (
        query_string,
        stamp,
        None if result is None else result.trade_id,
        None if result is None else round(result.cooldown_left_s),
    )
    body = _bodies.get(memo_key)
    if body is None:
        view = state.dividends.peek(netuid, hotkey)
        if view is None:
            return None
        trade_info = trade_fields(result, trade_netuid, trade_hotkey)
        body = dividends_body(netuid, hotkey, view, trade_info).model_dump_json().encode()
        if len(_bodies) >= _MAX_REMEMBERED:
            _bodies.clear()
        _bodies[memo_key] = body
    CACHE_LOOKUPS.labels("memory").inc()
    FASTPATH_HITS.inc()
    return body
