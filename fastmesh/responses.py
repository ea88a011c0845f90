"""Responses fastmesh writes itself: linkerd-style errors (spec §7.1) and small admin answers.

Everything here runs on rare paths (a route-cache miss that fails, a refused upstream, a
malformed request), so it favours clarity; the bytes are built once per error.
"""

from __future__ import annotations

from http import HTTPStatus

from fastmesh.errors import l5d_err_encode

# linkerd's defaults (spec §2.4): maxHeadersKB caps the l5d-err header, maxErrResponseKB the body
DEFAULT_MAX_HEADERS_KB = 8
DEFAULT_MAX_ERR_RESPONSE_KB = 5120


def reason_phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def error_response(status: int, message: str, *, close: bool = False,
                   retryable: bool = False,
                   max_headers_kb: int = DEFAULT_MAX_HEADERS_KB,
                   max_err_response_kb: int = DEFAULT_MAX_ERR_RESPONSE_KB) -> bytes:
    """A complete HTTP/1.1 error response carrying `l5d-err` (URL-encoded, one line)."""
    body = message.encode("utf-8")[: max_err_response_kb * 1024]
    err = l5d_err_encode(message)[: max_headers_kb * 1024]
    head = [f"HTTP/1.1 {status} {reason_phrase(status)}",
            f"l5d-err: {err}",
            "Content-Type: text/plain",
            f"Content-Length: {len(body)}"]
    if retryable:
        head.append("l5d-retryable: true")
    if close:
        head.append("Connection: close")
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


def plain_response(status: int, body: bytes, content_type: str = "text/plain;charset=UTF-8",
                   extra: list[tuple[str, str]] | None = None, *, head_only: bool = False,
                   close: bool = False) -> bytes:
    head = [f"HTTP/1.1 {status} {reason_phrase(status)}",
            f"Content-Type: {content_type}",
            f"Content-Length: {len(body)}"]
    for k, v in extra or ():
        head.append(f"{k}: {v}")
    if close:
        head.append("Connection: close")
    out = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
    return out if head_only else out + body
