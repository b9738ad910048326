"""Typed outside-API errors: what a status maps to, what an error body says, what a metric
label calls an attempt, and that no secret survives into a detail."""

from __future__ import annotations

import pytest

from pipeline.clients.errors import (
    AuthError,
    ExternalAPIError,
    InvalidResponseError,
    QuotaError,
    attempt_outcome,
    error_detail,
    error_for_status,
    scrub,
)

SECRET = "sk-very-secret-key-0042"


class TestErrors:
    def test_error_detail_shapes(self) -> None:
        assert error_detail(b'{"detail": "Authentication required."}') == (
            "Authentication required."
        )
        quota = b'{"detail": {"message": "Quota exceeded", "quota_reset_timestamp": "x"}}'
        assert error_detail(quota) == "Quota exceeded"
        validation = b'{"detail": [{"loc": ["query", "query"], "msg": "Field required"}]}'
        assert error_detail(validation) == "query.query: Field required"
        assert error_detail(b'{"error": "Insufficient balance"}') == "Insufficient balance"
        assert (
            error_detail(b"<html>\n<b>Bad   Gateway</b></html>")
            == "<html> <b>Bad Gateway</b></html>"
        )
        assert error_detail(b"") == "(empty body)"
        assert len(error_detail(b"x" * 5000)) == 300

    def test_error_detail_and_scrub_mask_secrets(self) -> None:
        body = f'{{"detail": "bad key {SECRET}"}}'.encode()
        assert error_detail(body, [SECRET]) == "bad key ***"
        assert scrub(f"a{SECRET}b", [SECRET, ""]) == "a***b"

    @pytest.mark.parametrize(
        ("status", "kind", "retryable"),
        [
            (401, AuthError, False),
            (403, AuthError, False),
            (402, QuotaError, False),
            (404, ExternalAPIError, False),
            (422, ExternalAPIError, False),
            (400, ExternalAPIError, False),
            (408, ExternalAPIError, True),
            (429, ExternalAPIError, True),
            (500, ExternalAPIError, True),
            (502, ExternalAPIError, True),
            (503, ExternalAPIError, True),
            (599, ExternalAPIError, True),
        ],
    )
    def test_status_mapping(self, status: int, kind: type, retryable: bool) -> None:
        error = error_for_status("svc", status, "why")
        assert type(error) is kind
        assert error.retryable is retryable
        assert error.upstream_status == status
        assert error.message == f"svc: HTTP {status}: why"

    def test_fields_message_and_str(self) -> None:
        error = ExternalAPIError("svc", None, "timed out", retryable=True, transport="timeout")
        assert (error.service, error.upstream_status, error.detail) == ("svc", None, "timed out")
        assert (error.retryable, error.attempts, error.transport) == (True, 1, "timeout")
        assert error.message == str(error) == "svc: no response: timed out"
        assert error.code == "external_api_error"
        assert error != ExternalAPIError("svc", None, "timed out", retryable=True)
        assert {error: 1}[error] == 1  # identity-hashed, as exceptions are

    @pytest.mark.parametrize(
        ("error", "outcome"),
        [
            (None, "ok"),
            (InvalidResponseError("s", 200, "not JSON", retryable=False), "invalid_response"),
            (ExternalAPIError("s", None, "t", retryable=True, transport="timeout"), "timeout"),
            (ExternalAPIError("s", None, "c", retryable=True), "connection_error"),
            (ExternalAPIError("s", 429, "slow down", retryable=True), "http_429"),
            (ExternalAPIError("s", 503, "down", retryable=True), "http_5xx"),
            (ExternalAPIError("s", 404, "gone", retryable=False), "http_4xx"),
            (ExternalAPIError("s", 302, "moved", retryable=False), "http_3xx"),
            (ExternalAPIError("s", 199, "odd", retryable=False), "http_other"),
        ],
    )
    def test_attempt_outcome_labels(self, error: ExternalAPIError | None, outcome: str) -> None:
        assert attempt_outcome(error) == outcome
