"""GET /console and its two assets.

The page holds no data and needs no token to load: it asks for one, keeps it in
sessionStorage and reads the JSON API with `Authorization: Bearer`. A strict
Content-Security-Policy allows only this origin's script, style and API (no inline script
or style, no frames, no form posts), so a tweet that slipped past the page's escaping
still could not run.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter, Request
from starlette.responses import Response

STATIC = Path(__file__).parent / "static"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    # Revalidated on every load (cheap with the ETag): a new release is never half-cached.
    "Cache-Control": "no-cache",
}


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    media_type: str
    etag: str

    @classmethod
    def load(cls, name: str, media_type: str) -> Asset:
        body = (STATIC / name).read_bytes()
        return cls(body, media_type, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')

    def response(self, request: Request) -> Response:
        headers = {**SECURITY_HEADERS, "ETag": self.etag}
        if request.headers.get("if-none-match") == self.etag:
            return Response(status_code=304, headers=headers)
        return Response(self.body, media_type=self.media_type, headers=headers)


PAGE = Asset.load("console.html", "text/html; charset=utf-8")
SCRIPT = Asset.load("console.js", "text/javascript; charset=utf-8")
STYLE = Asset.load("console.css", "text/css; charset=utf-8")

router = APIRouter(tags=["console"], include_in_schema=False)


@router.get("/console")
async def console(request: Request) -> Response:
    return PAGE.response(request)


@router.get("/console/console.js")
async def console_script(request: Request) -> Response:
    return SCRIPT.response(request)


@router.get("/console/console.css")
async def console_style(request: Request) -> Response:
    return STYLE.response(request)
