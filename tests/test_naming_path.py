"""Path syntax, showing and operations (spec §3.1)."""

import pickle

import pytest

from fastmesh.naming import ParseError, Path

# (input, labels) — every accepted form, including whitespace and comments around it.
READ_CASES = [
    ("/", ()),
    ("  /  ", ()),
    ("/foo", (b"foo",)),
    ("/foo/bar", (b"foo", b"bar")),
    ("/#/io.l5d.k8s/default/http", (b"#", b"io.l5d.k8s", b"default", b"http")),
    ("/$/inet/127.1/8080", (b"$", b"inet", b"127.1", b"8080")),
    ("/a_b:c.d-e%f", (b"a_b:c.d-e%f",)),
    ("/\\x2f", (b"/",)),
    ("/\\x2F\\x41", (b"/A",)),
    ("/a\\x20b", (b"a b",)),
    ("/\\xff\\x00", (b"\xff\x00",)),
    ("\t/svc/world\n", (b"svc", b"world")),
    ("# a comment line\n/svc", (b"svc",)),
    ("/svc # trailing comment", (b"svc",)),
    ("/svc#x", (b"svc#x",)),  # '#' continuing a label is a label character
    ("/#foo", (b"#foo",)),
]


@pytest.mark.parametrize("text,labels", READ_CASES)
def test_read(text, labels):
    assert Path.read(text).labels == labels


# (input, exact message) — finagle's "<expected> expected but <found> found at '<...>'".
ERROR_CASES = [
    ("invalid-param", "'/' expected but 'i' found at '[i]nvalid-param'"),
    ("", "'/' expected but end of input found at '[]'"),
    ("/foo/bar/", "label char expected but end of input found at '/foo/bar/[]'"),
    ("/{}", "end of input expected but '{' found at '/[{]}'"),
    ("/\\?", "'x' expected but '?' found at '/\\[?]'"),
    ("/\\x?", "hex char expected but '?' found at '/\\x[?]'"),
    ("/\\x0?", "hex char expected but '?' found at '/\\x0[?]'"),
    ("/foo^bar", "end of input expected but '^' found at '/foo[^]bar'"),
    ("/foo bar", "end of input expected but 'b' found at '/foo [b]ar'"),
    ("//foo", "end of input expected but '/' found at '/[/]foo'"),  # '/' then no label: empty path
    ("/a/*", "label char expected but '*' found at '/a/[*]'"),
]


@pytest.mark.parametrize("text,message", ERROR_CASES)
def test_read_errors(text, message):
    with pytest.raises(ParseError) as info:
        Path.read(text)
    assert str(info.value) == message
    assert isinstance(info.value, ValueError)


def test_error_offset_points_at_offending_char():
    with pytest.raises(ParseError) as info:
        Path.read("/ok/b^d")
    assert info.value.offset == 5


# (labels, shown) — a label with any non-showable byte is escaped entirely, lowercase hex.
SHOW_CASES = [
    ((), "/"),
    ((b"svc", b"world"), "/svc/world"),
    ((b"world:7778",), "/world:7778"),
    ((b"a b",), "/\\x61\\x20\\x62"),
    ((b"a/b",), "/\\x61\\x2f\\x62"),
    ((b"ok", b"\xff"), "/ok/\\xff"),
    ((b"x*",), "/\\x78\\x2a"),
    ((b"\xc3\xa9t\xc3\xa9",), "/\\xc3\\xa9\\x74\\xc3\\xa9"),
]


@pytest.mark.parametrize("labels,shown", SHOW_CASES)
def test_show(labels, shown):
    path = Path(*labels)
    assert path.show == shown
    assert Path.read(shown) == path  # read(show(p)) == p


ROUND_TRIPS = ["/", "/svc/world", "/\\x2f", "/%/io.l5d.port/4141/#/io.l5d.fs/a", "/a\\x20b/c", "/\\xAB\\xcd"]


@pytest.mark.parametrize("text", ROUND_TRIPS)
def test_read_show_read(text):
    once = Path.read(text)
    assert Path.read(once.show) == once
    assert Path.read(once.show).show == once.show


def test_utf8_labels():
    assert Path.utf8("svc", "héllo").labels == (b"svc", "héllo".encode())
    assert Path.utf8("svc", "a/b").show == "/svc/\\x61\\x2f\\x62"
    with pytest.raises(ValueError):
        Path.utf8("svc", "")
    with pytest.raises(ValueError):
        Path(b"")


def test_operations():
    p = Path.read("/a/b/c")
    assert len(p) == 3 and len(Path.empty) == 0
    assert p.take(2) == Path.read("/a/b")
    assert p.take(0) == Path.empty
    assert p.take(9) == p
    assert p.drop(1) == Path.read("/b/c")
    assert p.drop(3) == Path.empty
    assert p.startswith(Path.read("/a/b"))
    assert p.startswith(Path.empty)
    assert not p.startswith(Path.read("/a/c"))
    assert not Path.read("/a").startswith(p)
    assert Path.read("/a") + Path.read("/b/c") == p
    assert Path.empty + p == p and p + Path.empty == p
    assert p[0] == b"a" and p[1:] == Path.read("/b/c")
    assert list(p) == [b"a", b"b", b"c"]
    assert Path.empty.show == "/"
    assert Path.read("/").is_empty


def test_equality_and_hash():
    a = Path.read("/svc/world")
    b = Path.utf8("svc", "world")
    assert a == b and hash(a) == hash(b)
    assert a != Path.read("/svc/World")  # case-sensitive
    assert {a: 1}[b] == 1
    assert len({a, b, Path.read("/svc")}) == 2
    assert pickle.loads(pickle.dumps(a)) == a


def test_immutable():
    p = Path.read("/a")
    with pytest.raises(AttributeError):
        p.labels = (b"x",)
    with pytest.raises(TypeError):
        Path("notbytes")
