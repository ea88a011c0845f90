"""Dtab and name-tree syntax, showing, lookup and evaluation (spec §3.2–§3.4)."""

import pytest

from fastmesh.naming import (
    Alt,
    Dentry,
    Dtab,
    Empty,
    Fail,
    Leaf,
    NameTree,
    Neg,
    ParseError,
    Path,
    Prefix,
    Union,
    Weighted,
)


def L(text):
    return Leaf(Path.read(text))


# --- name trees --------------------------------------------------------------------------------

TREE_CASES = [
    ("/a", L("/a")),
    ("!", Fail),
    ("~", Neg),
    ("$", Empty),
    ("/a | /b", Alt((L("/a"), L("/b")))),
    ("/a & /b", Union((Weighted(1.0, L("/a")), Weighted(1.0, L("/b"))))),
    # '&' binds tighter than '|'
    ("/a & /b | /c", Alt((Union((Weighted(1.0, L("/a")), Weighted(1.0, L("/b")))), L("/c")))),
    ("/a | /b & /c", Alt((L("/a"), Union((Weighted(1.0, L("/b")), Weighted(1.0, L("/c"))))))),
    ("(/a | /b) & /c", Union((Weighted(1.0, Alt((L("/a"), L("/b")))), Weighted(1.0, L("/c"))))),
    ("0.3 * /a & 0.7*/b", Union((Weighted(0.3, L("/a")), Weighted(0.7, L("/b"))))),
    (".5*/a & 2*/b", Union((Weighted(0.5, L("/a")), Weighted(2.0, L("/b"))))),
    ("1.*/a & /b", Union((Weighted(1.0, L("/a")), Weighted(1.0, L("/b"))))),
    ("3*/a", L("/a")),  # a single weighted member is just the member
    ("((/a))", L("/a")),
    ("/a|~|!|$", Alt((L("/a"), Neg, Fail, Empty))),
    ("  /a  # note\n | /b", Alt((L("/a"), L("/b")))),
]


@pytest.mark.parametrize("text,tree", TREE_CASES)
def test_tree_read(text, tree):
    assert NameTree.read(text) == tree


SHOW_CASES = [
    (L("/a"), "/a"),
    (Neg, "~"),
    (Fail, "!"),
    (Empty, "$"),
    (Alt((L("/a"), L("/b"))), "/a | /b"),
    (Union((Weighted(0.5, L("/a")), Weighted(1.0, L("/b")))), "0.50*/a & /b"),
    (Union((Weighted(3.0, L("/a")), Weighted(0.125, L("/b")))), "3.00*/a & 0.13*/b"),  # Java %.2f rounds half up
    (Alt((Union((Weighted(1.0, L("/a")), Weighted(1.0, L("/b")))), L("/c"))), "/a & /b | /c"),
    (Union((Weighted(1.0, Alt((L("/a"), L("/b")))), Weighted(1.0, L("/c")))), "(/a | /b) & /c"),
    (Alt((Alt((L("/a"), L("/b"))), L("/c"))), "(/a | /b) | /c"),
    (Union((Weighted(0.5, Union((Weighted(1.0, L("/a")), Weighted(1.0, L("/b"))))), Weighted(0.5, L("/c")))),
     "0.50*(/a & /b) & 0.50*/c"),
    (Alt((L("/a"),)), "/a"),  # one-member nodes print as the member
    (Union((Weighted(0.2, L("/a")),)), "/a"),
    (Alt((L("/a"), Neg, Fail, Empty)), "/a | ~ | ! | $"),
]


@pytest.mark.parametrize("tree,shown", SHOW_CASES)
def test_tree_show(tree, shown):
    assert tree.show == shown


@pytest.mark.parametrize("tree,shown", SHOW_CASES)
def test_tree_show_reads_back_equivalent(tree, shown):
    again = NameTree.read(tree.show)
    assert again.show == shown
    assert again.simplified == NameTree.read(shown).simplified


TREE_ERRORS = [
    ("", "simple expected but end of input found at '[]'"),
    ("/a |", "simple expected but end of input found at '/a |[]'"),
    ("/a & & /b", "simple expected but '&' found at '/a & [&] /b'"),
    ("(/a", "')' expected but end of input found at '(/a[]'"),
    (".*/a", "weight expected but '.' found at '.[*]/a'"),
    ("0.1.2*/a", "number char expected but '.' found at '0.1[.]2*/a'"),
    ("2 /a", "'*' expected but '/' found at '2 [/]a'"),
    ("/a /b", "end of input expected but '/' found at '/a [/]b'"),
]


@pytest.mark.parametrize("text,message", TREE_ERRORS)
def test_tree_errors(text, message):
    with pytest.raises(ParseError) as info:
        NameTree.read(text)
    assert str(info.value) == message


# --- dtabs -------------------------------------------------------------------------------------

BLOG_DTAB = "/srv => /#/io.l5d.k8s/default/http; /host => /srv; /svc => /host; /host/world => /srv/world-v1;"


def test_blog_dtab_show_matches_linkerd_output():
    assert Dtab.read(BLOG_DTAB).show == (
        "/srv=>/#/io.l5d.k8s/default/http;/host=>/srv;/svc=>/host;/host/world=>/srv/world-v1"
    )


DTAB_CASES = [
    ("", 0),
    ("   ", 0),
    (";", None),  # a ';' must follow an entry
    ("/a=>/b", 1),
    ("/a=>/b;", 1),
    ("/a => /b ; /c => /d", 2),
    ("# only a comment", 0),
    ("/a => /b # note\n/c => /d", None),  # no ';' between entries: error (checked below)
    ("/a => /b; # note\n/c => /d;", 2),
    ("/ => /x", 1),
    ("/foo/*/bar => /b", 1),
    ("/* => /b", 1),
    ("/a => 0.3*/b & 0.7*/c | ~", 1),
]


@pytest.mark.parametrize("text,count", DTAB_CASES)
def test_dtab_read(text, count):
    if count is None:
        with pytest.raises(ParseError):
            Dtab.read(text)
        return
    assert len(Dtab.read(text)) == count


def test_dtab_comment_vs_label_hash():
    dtab = Dtab.read("/a => /b # note\n;/c=>/d#note")
    assert dtab.entries[0].dst == L("/b")
    assert dtab.entries[1].dst == Leaf(Path(b"d#note"))
    assert Dtab.read("/#/io.l5d.k8s=>/#foo").show == "/#/io.l5d.k8s=>/#foo"


def test_dentry_prefix_and_wildcards():
    d = Dentry.read("/svc/*/x => /y")
    assert d.prefix == Prefix(b"svc", None, b"x")
    assert d.prefix.show == "/svc/*/x"
    assert d.show == "/svc/*/x=>/y"
    assert Prefix.read("/").show == "/"


DTAB_ERRORS = [
    ("/foo/*bar => /b", "'=' expected but 'b' found at '/foo/*[b]ar => /b'"),
    ("/a = > /b", "'>' expected but ' ' found at '/a =[ ]> /b'"),
    ("/a => /b;;", "'/' expected but ';' found at '/a => /b;[;]'"),
    ("a => /b", "'/' expected but 'a' found at '[a] => /b'"),
    ("/a => ", "simple expected but end of input found at '/a => []'"),
    ("invalid-param", "'/' expected but 'i' found at '[i]nvalid-param'"),
]


@pytest.mark.parametrize("text,message", DTAB_ERRORS)
def test_dtab_errors(text, message):
    with pytest.raises(ParseError) as info:
        Dtab.read(text)
    assert str(info.value) == message


DTAB_ROUND_TRIPS = [
    BLOG_DTAB,
    "/a=>/b | /c & 0.25*/d;/e/*=>!;/f=>~;/g=>$",
    "/\\x2f=>/\\x20",
    "/=>/x",
    "/a=>(/b | /c) & /d",
]


@pytest.mark.parametrize("text", DTAB_ROUND_TRIPS)
def test_dtab_round_trip(text):
    once = Dtab.read(text)
    twice = Dtab.read(once.show)
    assert twice == once
    assert twice.show == once.show


def test_dtab_concat_and_equality():
    base = Dtab.read("/a=>/b")
    local = Dtab.read("/a=>/c;/a=>/d")
    both = base + local
    assert both.show == "/a=>/b;/a=>/c;/a=>/d"
    assert both == Dtab.read("/a=>/b;/a=>/c;/a=>/d")
    assert hash(both) == hash(Dtab.read("/a=>/b;/a=>/c;/a=>/d"))
    assert base + Dtab.empty == base and Dtab.empty + base == base
    assert not Dtab.empty and Dtab.read("") == Dtab.empty


# --- lookup: one rewriting step -------------------------------------------------------------------

LOOKUP_CASES = [
    # (dtab, path, expected tree shown)
    ("/a=>/b", "/a", "/b"),
    ("/a=>/b", "/a/x/y", "/b/x/y"),
    ("/a=>/b", "/ab", "~"),  # prefixes match whole labels
    ("/a=>/b", "/", "~"),
    ("/=>/root", "/x", "/root/x"),
    ("/a/*/c=>/z", "/a/anything/c/d", "/z/d"),
    ("/a/*/c=>/z", "/a/b", "~"),
    ("/A=>/b", "/a", "~"),  # case-sensitive
    # later entries first, earlier ones are fallbacks
    ("/a=>/b;/a=>/c;/a=>/d", "/a/x", "/d/x | /c/x | /b/x"),
    ("/a=>/b;/a/x=>/c", "/a/x", "/c | /b/x"),
    ("/a=>/b & /c", "/a/r", "/b/r & /c/r"),
    ("/a=>0.3*/b & 0.7*/c", "/a/r", "0.30*/b/r & 0.70*/c/r"),
    ("/a=>~", "/a", "~"),
    ("/a=>!;/a=>/b", "/a", "/b | !"),
]


@pytest.mark.parametrize("dtab,path,shown", LOOKUP_CASES)
def test_lookup(dtab, path, shown):
    assert Dtab.read(dtab).lookup(Path.read(path)).show == shown


# --- simplify and eval (NameTree semantics) -------------------------------------------------------

SIMPLIFY_CASES = [
    ("/a | ~ | /b", "/a | /b"),
    ("~ | /a", "/a"),
    ("~ | ~", "~"),
    ("/a | ! | /b", "/a | !"),  # a Fail stops an Alt
    ("/a & ~ & !", "/a"),  # a Union drops Neg and Fail
    ("~ & !", "~"),
    ("$ & /a", "$ & /a"),  # Empty stays in a union
    ("0.5*/a & 0.5*~", "/a"),  # one member left: the member, weight forgotten
]


@pytest.mark.parametrize("text,shown", SIMPLIFY_CASES)
def test_simplify(text, shown):
    assert NameTree.read(text).simplified.show == shown


EVAL_CASES = [
    ("/a", {"/a"}),
    ("~", None),
    ("!", None),
    ("$", set()),
    ("~ | /a | /b", {"/a"}),
    ("! | /a", None),
    ("/a & /b", {"/a", "/b"}),
    ("/a & ~ & !", {"/a"}),
    ("~ & ~", None),
    ("$ | /a", set()),  # Empty is not negative: the Alt stops there
    ("(~ | /a) & (/b | /c)", {"/a", "/b"}),
]


@pytest.mark.parametrize("text,expected", EVAL_CASES)
def test_eval(text, expected):
    result = NameTree.read(text).eval()
    if expected is None:
        assert result is None
    else:
        assert {p.show for p in result} == expected
