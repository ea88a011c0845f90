"""HTTP identifiers (spec §4)."""

import pytest

from fastmesh.errors import NotSupportedError
from fastmesh.identify import (
    Identified,
    RequestInfo,
    Unidentified,
    build_identifier,
)
from fastmesh.naming import Path

SVC = Path.read("/svc")


def req(method="GET", uri="/", version="1.1", headers=()):
    return RequestInfo(method, uri, version, tuple(headers))


def name_of(result):
    assert isinstance(result, Identified), result
    return result.path.show


# --- io.l5d.header.token (the default) ------------------------------------------------------------

TOKEN_CASES = [
    ([("Host", "world")], "/svc/world"),
    ([("Host", "world:7778")], "/svc/world:7778"),  # the port stays
    ([("Host", "10.0.0.5:4141")], "/svc/10.0.0.5:4141"),
    ([("Host", "Foo")], "/svc/Foo"),  # no case folding
    ([("host", "lower-case-header")], "/svc/lower-case-header"),  # header names are case-insensitive
    ([("HOST", "a"), ("Host", "b")], "/svc/a"),  # the first value
    ([("Host", "a/b")], "/svc/\\x61\\x2f\\x62"),  # one label, escaped whole
    ([("Host", "a b")], "/svc/\\x61\\x20\\x62"),
]


@pytest.mark.parametrize("headers,expected", TOKEN_CASES)
def test_default_host_token(headers, expected):
    ident = build_identifier(None, SVC)
    assert name_of(ident.identify(req(headers=headers))) == expected


@pytest.mark.parametrize("headers", [[], [("Host", "")], [("X-Other", "world")]])
def test_default_host_token_absent(headers):
    result = build_identifier(None, SVC).identify(req(headers=headers))
    assert result == Unidentified("Host header is absent")


def test_header_token_custom_header_and_prefix():
    ident = build_identifier({"kind": "io.l5d.header.token", "header": "my-header"}, Path.empty)
    assert name_of(ident.identify(req(headers=[("My-Header", "foo")]))) == "/foo"
    assert ident.identify(req(headers=[("Host", "x")])) == Unidentified("my-header header is absent")
    assert ident.key_spec == ("header", "my-header")


def test_http10_treated_like_http11_by_the_token_identifier():
    ident = build_identifier(None, SVC)
    assert name_of(ident.identify(req(version="1.0", headers=[("Host", "w")]))) == "/svc/w"


# --- io.l5d.methodAndHost ---------------------------------------------------------------------------

MH_CASES = [
    # (httpUriInDst, method, uri, version, headers, expected name or Unidentified reason)
    (False, "GET", "/", "1.1", [("Host", "DoMaiN")], "/svc/1.1/GET/domain"),
    (False, "POST", "/x", "HTTP/1.1", [("Host", "Web:8080")], "/svc/1.1/POST/web:8080"),
    (False, "GET", "/", "1.0", [("Host", "ignored")], "/svc/1.0/GET"),
    (False, "GET", "/", "1.0", [], "/svc/1.0/GET"),
    (True, "GET", "/some/path?q=1", "1.1", [("Host", "DoMaiN")], "/svc/1.1/GET/domain/some/path"),
    (True, "GET", "/", "1.1", [("Host", "d")], "/svc/1.1/GET/d"),
    (True, "PUT", "/a/b", "1.0", [], "/svc/1.0/PUT/a/b"),
    (False, "GET", "/", "1.1", [], Unidentified("HTTP/1.1 request missing hostname")),
    (False, "GET", "/", "1.1", [("Host", "")], Unidentified("HTTP/1.1 request missing hostname")),
    (False, "GET", "/", "2.0", [("Host", "d")], Unidentified("Unknown HTTP version HTTP/2.0")),
]


@pytest.mark.parametrize("uri_in_dst,method,uri,version,headers,expected", MH_CASES)
def test_method_and_host(uri_in_dst, method, uri, version, headers, expected):
    ident = build_identifier({"kind": "io.l5d.methodAndHost", "httpUriInDst": uri_in_dst}, SVC)
    result = ident.identify(req(method, uri, version, headers))
    if isinstance(expected, Unidentified):
        assert result == expected
    else:
        assert name_of(result) == expected and result.uri is None
    assert ident.key_spec == ("method_host", uri_in_dst)


@pytest.mark.parametrize("uri", ["/trailing/", "/with space", "/a//b"])
def test_method_and_host_invalid_uri_path(uri):
    ident = build_identifier({"kind": "io.l5d.methodAndHost", "httpUriInDst": True}, SVC)
    result = ident.identify(req(uri=uri, headers=[("Host", "d")]))
    assert isinstance(result, Unidentified) and result.invalid
    assert result.reason.startswith("not a valid path: ")


# --- io.l5d.path ----------------------------------------------------------------------------------------

PATH_CASES = [
    # (segments, consume, uri, expected name, rewritten uri) — name None means unidentified
    (1, False, "/one/two", "/svc/one", None),
    (2, False, "/one/two/three?x=1", "/svc/one/two", None),
    (2, False, "/one", None, None),
    (1, False, "/", None, None),
    (1, False, "", None, None),
    (1, False, "/x?y/z", "/svc/x", None),  # the query is not part of the path
    (1, False, "/caf%C3%A9", "/svc/caf%C3%A9", None),  # no percent-decoding
    (2, False, "/one/two/", "/svc/one/two", None),
    (3, False, "/one/two/", None, None),  # trailing empty segments do not count
    (2, True, "/mysvc/subsvc/path1/?foo=bar", "/svc/mysvc/subsvc", "/path1/?foo=bar"),
    (2, True, "/mysvc/subsvc/path1", "/svc/mysvc/subsvc", "/path1"),
    (2, True, "/mysvc/subsvc", "/svc/mysvc/subsvc", "/"),
    (2, True, "/mysvc/subsvc/", "/svc/mysvc/subsvc", "/"),
    (1, True, "/a?q=1", "/svc/a", "/?q=1"),
    (1, True, "/a/b/c/", "/svc/a", "/b/c/"),
    (1, True, "/a//b", "/svc/a", "//b"),  # empty segments after the name are kept as they are
]


@pytest.mark.parametrize("segments,consume,uri,expected,rewritten", PATH_CASES)
def test_path_identifier(segments, consume, uri, expected, rewritten):
    ident = build_identifier({"kind": "io.l5d.path", "segments": segments, "consume": consume}, SVC)
    result = ident.identify(req(uri=uri))
    if expected is None:
        assert result == Unidentified("not enough segments in path")
    else:
        assert name_of(result) == expected
        assert result.uri == rewritten
    assert ident.key_spec == ("path", segments, consume)


@pytest.mark.parametrize("uri", ["//x", "/a//b"])
def test_path_identifier_empty_segment_is_invalid(uri):
    ident = build_identifier({"kind": "io.l5d.path", "segments": 2}, SVC)
    result = ident.identify(req(uri=uri))
    assert isinstance(result, Unidentified) and result.invalid


def test_path_identifier_default_is_one_segment():
    ident = build_identifier({"kind": "io.l5d.path"}, SVC)
    assert name_of(ident.identify(req(uri="/users/42"))) == "/svc/users"


# --- io.l5d.header and io.l5d.static ------------------------------------------------------------------

def test_header_path_identifier():
    ident = build_identifier({"kind": "io.l5d.header", "header": "my-header"}, SVC)
    assert name_of(ident.identify(req(headers=[("my-header", "/a/b/c")]))) == "/svc/a/b/c"
    assert ident.identify(req()) == Unidentified("my-header header is absent")
    assert ident.identify(req(headers=[("my-header", "")])) == Unidentified("my-header header is absent")
    bad = ident.identify(req(headers=[("my-header", "a/b")]))
    assert isinstance(bad, Unidentified) and bad.invalid
    assert bad.reason == "not a valid path: '/' expected but 'a' found at '[a]/b'"
    assert ident.key_spec == ("header_path", "my-header")
    default = build_identifier({"kind": "io.l5d.header"}, SVC)
    assert name_of(default.identify(req(headers=[("L5d-Name", "/x")]))) == "/svc/x"


def test_static_identifier():
    ident = build_identifier({"kind": "io.l5d.static", "path": "/foo/bar"}, SVC)
    assert name_of(ident.identify(req())) == "/svc/foo/bar"
    assert ident.key_spec == ("static",)


# --- lists ------------------------------------------------------------------------------------------------

def test_list_first_that_identifies_wins():
    ident = build_identifier([{"kind": "io.l5d.methodAndHost"}, {"kind": "io.l5d.path"}], SVC)
    # No Host: methodAndHost declines, the path identifier names it.
    assert name_of(ident.identify(req(uri="/one"))) == "/svc/one"
    assert name_of(ident.identify(req(uri="/one", headers=[("Host", "H")]))) == "/svc/1.1/GET/h"
    assert ident.key_spec == ("list", (("method_host", False), ("path", 1, False)))


def test_list_uses_the_last_reason():
    ident = build_identifier([{"kind": "io.l5d.header.token"}, {"kind": "io.l5d.path", "segments": 3}], SVC)
    assert ident.identify(req(uri="/a")) == Unidentified("not enough segments in path")


def test_list_stops_at_an_invalid_value():
    ident = build_identifier([{"kind": "io.l5d.header", "header": "x-name"}, {"kind": "io.l5d.static", "path": "/s"}],
                             SVC)
    assert isinstance(ident.identify(req(headers=[("x-name", "nope")])), Unidentified)
    assert name_of(ident.identify(req())) == "/svc/s"


def test_single_entry_list_is_that_identifier():
    ident = build_identifier([{"kind": "io.l5d.path"}], SVC)
    assert ident.key_spec == ("path", 1, False)


# --- config errors --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("config,message", [
    ({"kind": "io.l5d.nope"}, "unknown identifier kind"),
    ({"kind": "io.l5d.path", "segmnts": 2}, "unknown key 'segmnts'"),
    ({"kind": "io.l5d.path", "segments": "2"}, "segments must be"),
    ({"kind": "io.l5d.methodAndHost", "httpUriInDst": "yes"}, "httpUriInDst must be true or false"),
    ({"kind": "io.l5d.static"}, "'path' is required"),
    ({"kind": "io.l5d.static", "path": "nope"}, "invalid path"),
])
def test_config_errors(config, message):
    with pytest.raises(ValueError, match=message):
        build_identifier(config, SVC)


def test_unsupported_identifier_kind():
    with pytest.raises(NotSupportedError):
        build_identifier({"kind": "io.l5d.ingress"}, SVC)
