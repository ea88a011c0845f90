"""linkerd error texts and the l5d-err encoding (spec §7)."""

import urllib.parse

import pytest

from fastmesh.errors import (
    NotSupportedError,
    binding_timeout_message,
    connection_failed_message,
    format_duration,
    l5d_err_encode,
    max_call_depth_message,
    no_route_message,
    request_description,
    unknown_destination_message,
)
from fastmesh.naming import Dtab, Path

# Java URLEncoder.encode(msg, "ISO-8859-1") rules.
ENCODE_CASES = [
    ("abcXYZ019", "abcXYZ019"),
    (".-*_", ".-*_"),  # kept as they are
    ("a b", "a+b"),
    ("~", "%7E"),  # Java encodes '~' (Python's quote would not)
    ("Unable to route request!", "Unable+to+route+request%21"),
    ("/svc/foo", "%2Fsvc%2Ffoo"),
    ("line1\nline2", "line1%0Aline2"),  # always one header line
    ("a=b&c+d%", "a%3Db%26c%2Bd%25"),
    ("é", "%E9"),  # ISO-8859-1 byte, not UTF-8
    ("€", "%3F"),  # outside ISO-8859-1 → '?'
    ("😀", "%3F"),  # one '?' per character
    ("'\"()<>", "%27%22%28%29%3C%3E"),
]


@pytest.mark.parametrize("msg,encoded", ENCODE_CASES)
def test_l5d_err_encode(msg, encoded):
    assert l5d_err_encode(msg) == encoded


def test_l5d_err_matches_the_python_recipe_for_latin1_text():
    msg = "exceeded 10.seconds to unspecified while dyn binding /svc/x. Remote Info: Not Available ~ ok"
    recipe = urllib.parse.quote_plus(msg.encode("latin-1", "replace"), safe="*").replace("~", "%7E")
    assert l5d_err_encode(msg) == recipe
    assert l5d_err_encode("exceeded 10.seconds to unspecified while dyn binding /svc/x. Remote Info: Not Available") == (
        "exceeded+10.seconds+to+unspecified+while+dyn+binding+%2Fsvc%2Fx.+Remote+Info%3A+Not+Available"
    )


TRUNCATE_CASES = [
    ("abcdef", 4, "abcd"),
    ("ab/cd", 2, "ab"),
    ("ab/cd", 3, "ab"),  # "%2F" would be cut: drop the whole escape
    ("ab/cd", 4, "ab"),
    ("ab/cd", 5, "ab%2F"),
    ("ab/cd", 99, "ab%2Fcd"),
    ("abc", 0, ""),
]


@pytest.mark.parametrize("msg,limit,encoded", TRUNCATE_CASES)
def test_l5d_err_truncation(msg, limit, encoded):
    assert l5d_err_encode(msg, limit) == encoded


def test_no_route_message_exact_text():
    base = Dtab.read("/srv => /#/io.l5d.k8s/default/http; /host => /srv; /svc => /host; /host/world => /srv/world-v1")
    local = Dtab.read("/svc => /#/io.l5d.k8s/default/admin/l5d")
    assert no_route_message(Path.read("/svc/foo"), base, local) == (
        "Unable to route request!\n"
        "\n"
        "service name: /svc/foo\n"
        "dtab:\n"
        "\n"
        "base dtab:\n"
        "  /srv => /#/io.l5d.k8s/default/http\n"
        "  /host => /srv\n"
        "  /svc => /host\n"
        "  /host/world => /srv/world-v1\n"
        "override dtab:\n"
        "  /svc => /#/io.l5d.k8s/default/admin/l5d\n"
    )


def test_no_route_message_without_override_and_its_header_form():
    text = no_route_message(Path.read("/svc/ralph-machio"), Dtab.read("/svc => /$/inet/127.1/1 | ~"), Dtab.empty)
    assert text.endswith("base dtab:\n  /svc => /$/inet/127.1/1 | ~\noverride dtab:\n\n")
    assert l5d_err_encode(text).startswith("Unable+to+route+request%21%0A%0Aservice+name%3A+%2Fsvc%2Fralph-machio%0A")


def test_connection_failed_message_exact_text():
    text = connection_failed_message(
        "127.0.0.1:8080", Path.read("/svc/dog"), Path.read("/$/inet/127.1/8080"), ["127.0.0.1:8080"], "127.0.0.1:8080"
    )
    assert text == (
        "Unable to establish connection to 127.0.0.1:8080.\n"
        "\n"
        "service name: /svc/dog\n"
        "client name: /$/inet/127.1/8080\n"
        "addresses: [127.0.0.1:8080]\n"
        "selected address: 127.0.0.1:8080\n"
    )
    two = connection_failed_message("10.0.0.2:80", "/svc/a", "/#/io.l5d.fs/a", ["10.0.0.1:80", "10.0.0.2:80"],
                                    "10.0.0.2:80")
    assert "addresses: [10.0.0.1:80, 10.0.0.2:80]\n" in two


def test_unknown_destination_and_call_depth():
    desc = request_description("GET", "/path", "1.2.3.4:5678")
    assert desc == 'Request("GET /path", from /1.2.3.4:5678)'
    assert unknown_destination_message(desc, "Host header is absent") == (
        'Unknown destination: Request("GET /path", from /1.2.3.4:5678) / Host header is absent'
    )
    assert max_call_depth_message(2) == (
        "Maximum number of calls (2) has been exceeded. Please check for proxy loops."
    )


DURATION_CASES = [
    (10_000, "10.seconds"),
    (500, "500.milliseconds"),
    (0, "0.seconds"),
    (1_500, "1.seconds+500.milliseconds"),
    (90_000, "1.minutes+30.seconds"),
    (3_600_000, "1.hours"),
    (86_400_000 * 2, "2.days"),
    (0.25, "250.microseconds"),
]


@pytest.mark.parametrize("ms,text", DURATION_CASES)
def test_format_duration(ms, text):
    assert format_duration(ms) == text


def test_binding_timeout_message():
    assert binding_timeout_message(10_000, Path.read("/svc/x")) == (
        "exceeded 10.seconds to unspecified while dyn binding /svc/x. Remote Info: Not Available"
    )


def test_not_supported_error_is_an_exception():
    with pytest.raises(NotSupportedError, match="not supported"):
        raise NotSupportedError("io.l5d.k8s is not supported yet")
