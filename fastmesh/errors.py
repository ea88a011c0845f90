"""linkerd-style error texts and the ``l5d-err`` header encoding (spec §7).

Role in the data path: when a request cannot be routed, the router answers with one of
these texts as the body and, URL-encoded the way ``java.net.URLEncoder.encode(msg,
"ISO-8859-1")`` does it, as the ``l5d-err`` header. Clients and dashboards match on these
texts, so they reproduce linkerd 1.7.5 byte for byte where the spec pins them down.
Also home of :class:`NotSupportedError`, raised by anything configured but not built.
"""

from __future__ import annotations

from typing import Any, Iterable

# Bytes URLEncoder leaves alone: A-Z a-z 0-9 . - * _  (space becomes '+').
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.-*_")
_ENCODED_BYTE = tuple(
    chr(b) if b in _UNRESERVED else ("+" if b == 0x20 else "%%%02X" % b) for b in range(256)
)


class NotSupportedError(Exception):
    """A configured feature fastmesh does not implement yet (never silently ignored)."""


def l5d_err_encode(msg: str, max_len: int | None = None) -> str:
    """Encode ``msg`` for the ``l5d-err`` header, at most ``max_len`` characters.

    Characters outside ISO-8859-1 become ``?`` first (Java's replacement); truncation
    never cuts a ``%XX`` escape in half.
    """
    raw = msg.encode("latin-1", "replace")
    encoded = "".join(_ENCODED_BYTE[b] for b in raw)
    if max_len is not None and len(encoded) > max_len:
        cut = max(max_len, 0)
        # Back off if the cut lands inside an escape ("%4" or "%").
        pct = encoded.rfind("%", max(cut - 2, 0), cut)
        if pct != -1:
            cut = pct
        encoded = encoded[:cut]
    return encoded


def _show(value: Any) -> str:
    shown = getattr(value, "show", None)
    return shown if isinstance(shown, str) else str(value)


def _dtab_lines(dtab: Any) -> str:
    """Each dentry as ``  <prefix> => <dst>`` (the dtab may be a Dtab or None)."""
    if dtab is None:
        return ""
    return "\n".join(f"  {d.prefix.show} => {d.dst.show}" for d in dtab)


def no_route_message(service: Any, base_dtab: Any, local_dtab: Any) -> str:
    """linkerd 1.7.5's ``RichNoBrokersAvailableException`` text (the 502 "no route")."""
    return (
        "Unable to route request!\n"
        "\n"
        f"service name: {_show(service)}\n"
        "dtab:\n"
        "\n"  # linkerd always prints this section empty
        "base dtab:\n"
        f"{_dtab_lines(base_dtab)}\n"
        "override dtab:\n"
        f"{_dtab_lines(local_dtab)}\n"
    )


def connection_failed_message(
    address: str, service: Any, client_id: Any, addresses: Iterable[str], selected: str
) -> str:
    """linkerd 1.7.5's ``RichConnectionFailedExceptionWithPath`` text (the 502 on connect)."""
    return (
        f"Unable to establish connection to {address}.\n"
        "\n"
        f"service name: {_show(service)}\n"
        f"client name: {_show(client_id)}\n"
        f"addresses: [{', '.join(addresses)}]\n"
        f"selected address: {selected}\n"
    )


def request_description(method: str, uri: str, remote: str | None = None) -> str:
    """finagle's ``Request("GET /path", from /1.2.3.4:5678)`` rendering."""
    if remote:
        return f'Request("{method} {uri}", from /{remote})'
    return f'Request("{method} {uri}")'


def unknown_destination_message(request_desc: str, reason: str) -> str:
    """The 400 text for a request no identifier could name (spec §4.8)."""
    return f"Unknown destination: {request_desc} / {reason}"


def max_call_depth_message(n: int) -> str:
    """The 400 text when the ``Via`` chain is longer than ``maxCallDepth`` (spec §6.6)."""
    return f"Maximum number of calls ({n}) has been exceeded. Please check for proxy loops."


_UNITS = (
    (86_400_000_000_000, "days"),
    (3_600_000_000_000, "hours"),
    (60_000_000_000, "minutes"),
    (1_000_000_000, "seconds"),
    (1_000_000, "milliseconds"),
    (1_000, "microseconds"),
    (1, "nanoseconds"),
)


def format_duration(ms: float) -> str:
    """A duration the way Twitter's ``Duration.toString`` prints it: ``10.seconds``,
    ``500.milliseconds``, ``1.minutes+30.seconds``, ``0.seconds``."""
    ns = int(round(ms * 1_000_000))
    if ns == 0:
        return "0.seconds"
    parts = []
    rem = ns
    for unit, name in _UNITS:
        count = int(rem / unit)  # truncates toward zero, like Java's long division
        if count:
            parts.append(f"{count}.{name}")
            rem -= count * unit
    return "+".join(parts)


def binding_timeout_message(timeout_ms: float, service: Any) -> str:
    """The 503 text when a name stays unbound for ``bindingTimeoutMs`` (spec §7.2)."""
    return (
        f"exceeded {format_duration(timeout_ms)} to unspecified while dyn binding "
        f"{_show(service)}. Remote Info: Not Available"
    )


def total_timeout_message(timeout_ms: float, service: Any, remote_info: str = "Not Available") -> str:
    """The 503 text when ``totalTimeoutMs`` expires (retries included)."""
    return (
        f"exceeded {format_duration(timeout_ms)} to {_show(service)} while waiting for a response "
        f"for the request, including retries (if applicable). Remote Info: {remote_info}"
    )


def attempt_timeout_message(timeout_ms: float, service: Any, remote_info: str = "Not Available") -> str:
    """The 503 text when ``requestAttemptTimeoutMs`` expires (one attempt)."""
    return (
        f"exceeded {format_duration(timeout_ms)} to {_show(service)} while waiting for a response "
        f"for an individual request, excluding retries. Remote Info: {remote_info}"
    )


__all__ = [
    "NotSupportedError",
    "attempt_timeout_message",
    "binding_timeout_message",
    "connection_failed_message",
    "format_duration",
    "l5d_err_encode",
    "max_call_depth_message",
    "no_route_message",
    "request_description",
    "total_timeout_message",
    "unknown_destination_message",
]
