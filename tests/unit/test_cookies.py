"""Unit tests of the cookie engine and list store (``gunpy.cookies``, RFC 6265bis).

Most cases are the web-platform-tests (WPT) cookie tests that Gun runs in
``rfc6265bis_SUITE`` and ``gun_cookies``' eunit tests, restated here: a response to
``scheme://web-platform.test/cookie-set`` sets cookies, then the ``cookie`` header
for a second request (``/cookie-echo``, or the test's own path when the WPT test
does not use the default path) is compared with what a browser would send.  Over
HTTP a header is bytes: UTF-8 cases are given to the engine as gunpy gives header
values, latin-1 decoded.
"""

from __future__ import annotations

import math
import time
from typing import Any

import pytest

from gunpy import cookies
from gunpy.cookies import (
    URI,
    Cookie,
    CookieStore,
    ListStore,
    add_cookie_header,
    cookie_header_value,
    default_path,
    domain_match,
    is_public_suffix,
    parse_cookie_date,
    parse_set_cookie,
    path_match,
    query,
    request_uri,
    set_cookie,
    set_cookie_header,
)

HOST = "web-platform.test"


def wire(s: str) -> str:
    """A str as gunpy has it after the wire: its UTF-8 bytes, latin-1 decoded."""
    return s.encode("utf-8").decode("latin-1")


def set_all(store: ListStore, set_cookies: list[str], uri: URI) -> None:
    set_cookie_header(
        store, uri.scheme, uri.host, uri.path, 200, [("set-cookie", wire(c)) for c in set_cookies]
    )


def header_for(store: ListStore, uri: URI) -> str:
    return cookie_header_value(query(store, uri))


def wpt(
    set_cookies: str | list[str],
    expected: str,
    default_path: bool = True,
    scheme: str = "http",
    test_path: str = "/cookies/attributes",
) -> None:
    """Gun's do_wpt_set_test."""
    if isinstance(set_cookies, str):
        set_cookies = [set_cookies]
    store = ListStore()
    set_all(store, set_cookies, URI(scheme, HOST, "/cookie-set"))
    path = "/cookie-echo" if default_path else test_path
    assert header_for(store, URI(scheme, HOST, path)) == wire(expected)


# --------------------------------------------------------------------------------------
# Matching (RFC 6265bis 5.1.3, 5.1.4; gun_cookies:path_match_test_)


@pytest.mark.parametrize(
    ("req", "cookie", "result"),
    [
        ("/", "/", True),
        ("/path/to/resource", "/path/to/resource", True),
        ("/path/", "/path/", True),
        ("/path/to/resource", "/path/", True),
        ("/path/to/resource", "/path", True),
        ("/path/to/resource", "/path/to/", True),
        ("/path/to/resource", "/path/to", True),
        ("/path/to/resource", "/pa", False),
        ("/path/to/resource", "/pat", False),
        ("/path/to/resource", "/path/to/r", False),
        ("/abc", "/def", False),
    ],
)
def test_path_match(req: str, cookie: str, result: bool) -> None:
    assert path_match(req, cookie) is result


@pytest.mark.parametrize(
    ("string", "domain", "result"),
    [
        ("example.org", "example.org", True),
        ("www.example.org", "example.org", True),
        ("a.b.example.org", "example.org", True),
        ("badexample.org", "example.org", False),
        ("example.org", "www.example.org", False),
        ("127.0.0.1", "127.0.0.1", True),
        ("1.2.3.4", "2.3.4", False),  # an IP address never domain-matches a suffix
        ("::1", "::1", True),
    ],
)
def test_domain_match(string: str, domain: str, result: bool) -> None:
    assert domain_match(string, domain) is result


@pytest.mark.parametrize(
    ("path", "expected"),
    [("", "/"), ("x", "/"), ("/", "/"), ("/a", "/"), ("/a/", "/a"), ("/a/b/c", "/a/b")],
)
def test_default_path(path: str, expected: str) -> None:
    assert default_path(path) == expected


@pytest.mark.parametrize(
    ("authority", "path", "uri"),
    [
        ("Example.ORG", "/a?b=c#d", URI("http", "example.org", "/a")),
        ("example.org:8080", "/", URI("http", "example.org", "/")),
        ("[::1]:8080", "/x", URI("http", "::1", "/x")),
        ("127.0.0.1", "/", URI("http", "127.0.0.1", "/")),
    ],
)
def test_request_uri(authority: str, path: str, uri: URI) -> None:
    assert request_uri("HTTP", authority, path) == uri


def test_public_suffixes() -> None:
    assert is_public_suffix("com")
    assert is_public_suffix("localhost")  # the list's default rule: any single label
    assert not is_public_suffix("example.com")
    assert not is_public_suffix(HOST)
    if cookies._load_psl()[0]:  # the system has a Public Suffix List
        assert is_public_suffix("co.uk")
        assert is_public_suffix("github.io")
        assert not is_public_suffix("example.co.uk")


# --------------------------------------------------------------------------------------
# Parsing (RFC 6265bis 5.6) and dates (5.1.1)


def test_parse_set_cookie_attributes() -> None:
    name, value, attrs = parse_set_cookie(
        "a=b; Domain=.Example.ORG; Path=/x; Secure; HttpOnly; SameSite=Lax; Max-Age=10"
    ) or ("", "", {})
    assert (name, value) == ("a", "b")
    assert attrs["domain"] == "example.org"
    assert attrs["path"] == "/x"
    assert attrs["secure"] is True
    assert attrs["http_only"] is True
    assert attrs["same_site"] == "lax"
    assert time.time() + 8 < attrs["max_age"] <= time.time() + 10


@pytest.mark.parametrize("header", ["", "=", "   ", "\t", "; a=b", "a=b\x01", "a=b\x7f", "a\nb=c"])
def test_parse_set_cookie_ignored(header: str) -> None:
    assert parse_set_cookie(header) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Fri, 01 Jan 2038 00:00:00 GMT", (2038, 1, 1, 0, 0, 0)),
        ("Fri 01 Jan 2038 00:00:00 GMT, baz=qux", (2038, 1, 1, 0, 0, 0)),
        ("Sunday, 06-Nov-94 08:49:37 GMT", (1994, 11, 6, 8, 49, 37)),
        ("Sun Nov  6 08:49:37 1994", (1994, 11, 6, 8, 49, 37)),
        ("6 november 2021 1:2:3", (2021, 11, 6, 1, 2, 3)),
        ("Thu, 10 Apr 1980 16:33:12 GMT", (1980, 4, 10, 16, 33, 12)),
        ("01 Jan 69 00:00:00", (2069, 1, 1, 0, 0, 0)),
        ("01 Jan 70 00:00:00", (1970, 1, 1, 0, 0, 0)),
    ],
)
def test_cookie_date(text: str, expected: tuple[int, ...]) -> None:
    t = parse_cookie_date(text)
    assert t is not None
    assert time.gmtime(t)[:6] == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Fri, 01 Jan 2038",  # no time
        "31 Feb 2020 00:00:00",  # no such day
        "01 Jan 1600 00:00:00",  # before 1601
        "01 Jan 2038 24:00:00",
        "01 Foo 2038 00:00:00",
    ],
)
def test_cookie_date_failures(text: str) -> None:
    assert parse_cookie_date(text) is None


def test_max_age_and_expires_are_capped_at_400_days() -> None:
    now = time.time()
    _, _, attrs = parse_set_cookie("a=b; Max-Age=999999999") or ("", "", {})
    assert attrs["max_age"] <= now + 400 * 86400 + 5
    _, _, attrs = parse_set_cookie("a=b; Expires=Fri, 01 Jan 2999 00:00:00 GMT") or ("", "", {})
    assert attrs["expires"] <= now + 400 * 86400 + 5


def test_max_age_wins_over_expires() -> None:
    store = ListStore()
    uri = URI("http", HOST, "/")
    set_all(store, ["a=b; Max-Age=0; Expires=Fri, 01 Jan 2038 00:00:00 GMT"], uri)
    assert header_for(store, uri) == ""
    set_all(store, ["a=b; Expires=Thu, 10 Apr 1980 16:33:12 GMT; Max-Age=60"], uri)
    assert header_for(store, uri) == "a=b"


# --------------------------------------------------------------------------------------
# WPT: attributes (expires, invalid, max-age, path, secure)

ATTRIBUTES_EXPIRES = [
    ("test=1; Expires=Fri, 01 Jan 2038 00:00:00 GMT", "test=1"),
    ("test=2; Expires=Fri 01 Jan 2038 00:00:00 GMT, baz=qux", "test=2"),
    ("test=3; Expires=Fri, 01 Jan 2038 00:00:00 GMT", "test=3"),
    (
        [
            "test=expired; Expires=Fri, 07 Aug 2007 08:04:19 GMT",
            "test=4; Expires=Fri, 07 Aug 2097 08:04:19 GMT",
        ],
        "test=4",
    ),
    ("test=5; expires=Thu, 10 Apr 1980 16:33:12 GMT", ""),
]


@pytest.mark.parametrize(("cookie", "expected"), ATTRIBUTES_EXPIRES)
def test_wpt_attributes_expires(cookie: Any, expected: str) -> None:
    wpt(cookie, expected)


# (cookie, expected, default_path)
ATTRIBUTES_INVALID: list[tuple[Any, str, bool]] = [
    ("test=1; lol; Path=/", "test=1", False),
    ("test=2; Path=/; lol", "test=2", False),
    ("test=3; Path=/; 'lol'", "test=3", False),
    ('test=4; Path=/; "lol"', "test=4", False),
    ("test=5; Path=/; lol=", "test=5", False),
    ('test=6; lol="aaa;bbb"; Path=/', "test=6", False),
    ('test=7; Path=/; lol="aaa;bbb"', "test=7", False),
    ('test=8; "Secure"', "test=8", True),
    ("test=9; Secure qux", "test=9", True),
    ("test=10; b,az=qux", "test=10", True),
    ("test=11; baz=q,ux", "test=11", True),
    ("  test  = 12  ;foo;;;   bar", "test=12", True),
    ("  test=== 13  ;foo;;;   bar", "test=== 13", True),
    ("test=14; version=1;", "test=14", True),
    ("test=15; version=1000;", "test=15", True),
    ("test=16; customvalue='1000 or more';", "test=16", True),
    ("test=17; customvalue='1000 or more'", "test=17", True),
    ("test=18; foo=bar, a=b", "test=18", True),
    ("test=19;max-age=3600, c=d;path=/", "test=19", False),
    (["testA=20", "=", "testb=20"], "testA=20; testb=20", True),
    (["test=21", ""], "test=21", True),
    (["test22", "="], "test22", True),
    (["testA23", "; testB23"], "testA23", True),
    (["test24", "   "], "test24", True),
    (["test25", "\t"], "test25", True),
    ("test=26; domain=.parser.test; ;; ;=; ,,, ===,abc,=; abracadabra! max-age=20;=;;", "", True),
]


@pytest.mark.parametrize(("cookie", "expected", "dp"), ATTRIBUTES_INVALID)
def test_wpt_attributes_invalid(cookie: Any, expected: str, dp: bool) -> None:
    wpt(cookie, expected, dp)


ATTRIBUTES_MAX_AGE: list[tuple[Any, str]] = [
    ("test=1; Max-Age=50,399", "test=1"),
    ("test=2; max-age=10000", "test=2"),
    ("test=3; max-age=0", ""),
    ("test=4; max-age=-1", ""),
    ("test=5; max-age=-20", ""),
    (["testA=6; max-age=60", "testB=6; max-age=60"], "testA=6; testB=6"),
    (["testA=7; max-age=60", "testB=7; max-age=60", "testA=differentvalue; max-age=0"], "testB=7"),
    (
        [
            "testA=8; max-age=60",
            "testB=8; max-age=60",
            "testA=differentvalue; max-age=0",
            "testC=8; max-age=0",
        ],
        "testB=8",
    ),
    (['test="9! = foo;bar";" parser; max-age=6', "test9; max-age=2.63,"], 'test="9! = foo; test9'),
    (["test=10; max-age=0", "test10; max-age=0"], ""),
]


@pytest.mark.parametrize(("cookie", "expected"), ATTRIBUTES_MAX_AGE)
def test_wpt_attributes_max_age(cookie: Any, expected: str) -> None:
    wpt(cookie, expected)


ATTRIBUTES_PATH: list[tuple[Any, str, bool]] = [
    ("test=1; Path", "test=1", True),
    ("test=2; Path=", "test=2", True),
    ("test=3; Path=/", "test=3", False),
    ("test=4; Path=/qux", "", False),
    ("test=5; Path    =/qux", "", False),
    ("test=6; Path=    /qux", "", False),
    ("test=7; Path=/qux      ; taz", "", False),
    ("test=8; Path=/qux; Path=/", "test=8", True),
    ("test=9; Path=/; Path=/qux", "", False),
    ("test=10; Path=/lol; Path=/qux", "", False),
    (["testA=11; path=/", "testB=11; path=/cookies/attributes"], "testB=11; testA=11", False),
    (["testB=12; path=/", "testA=12; path=/cookies/attributes"], "testA=12; testB=12", False),
    (["testA=13; path=/cookies/attributes", "testB=13; path=/"], "testA=13; testB=13", False),
    (["testB=14; path=/cookies/attributes", "testA=14; path=/"], "testB=14; testA=14", False),
    (["test=15; path=/cookies/attributes/foo"], "", False),
    (["test=16", "test=0; path=/cookies/attributes/foo"], "test=16", True),
    (["test=17; path= /"], "test=17", True),
    (["test=18; path=/cookies/ATTRIBUTES"], "", False),
    (
        ["testA=19; \tpath\t=\t/cookies/attributes", "testB=19; \tpath\t=\t/book"],
        "testA=19",
        False,
    ),
    (["test=20; path=; path=/dog"], "", False),
    (["test=21; path=/dog; path="], "test=21", True),
]


@pytest.mark.parametrize(("cookie", "expected", "dp"), ATTRIBUTES_PATH)
def test_wpt_attributes_path(cookie: Any, expected: str, dp: bool) -> None:
    wpt(cookie, expected, dp)


SECURE_VARIANTS = [
    "test=1; Secure",
    "test=2; seCURe",
    "test=3; Secure=",
    "test=4; Secure=aaaa",
    "test=5; Secure =aaaaa",
    "test=6; Secure= aaaaa",
    "test=7;                Secure",
    "test=8;       Secure     ;",
]


@pytest.mark.parametrize("cookie", SECURE_VARIANTS)
def test_wpt_attributes_secure_https(cookie: str) -> None:
    wpt(cookie, cookie.split(";")[0], scheme="https")


@pytest.mark.parametrize(
    "cookie", [*SECURE_VARIANTS, "__Secure-test=9; Secure", "__Secure-test=10"]
)
def test_wpt_attributes_secure_over_http_is_ignored(cookie: str) -> None:
    wpt(cookie, "", scheme="http")


def test_wpt_percent_encoded_prefix_is_not_a_prefix() -> None:
    wpt("__%53ecure-test=11", "__%53ecure-test=11", scheme="http")


# --------------------------------------------------------------------------------------
# WPT: attributes-ctl, name-ctl, value-ctl (every CTL voids the cookie but HTAB)

CTLS = [chr(c) for c in range(0x20)] + ["\x7f"]

CTL_CASES = [
    # (name, build(ctl) -> set-cookie, expected with HTAB, test path)
    (
        "testdomain",
        lambda c: f"testdomain=t; Domain=test{c}.co; Domain={HOST}",
        "testdomain=t",
        "/",
    ),
    ("testdomain2", lambda c: f"testdomain2=t; Domain={HOST}{c}", "testdomain2=t", "/"),
    (
        "testpath",
        lambda c: f"testpath=t; Path=/te{c}st; Path=/cookies/attributes",
        "testpath=t",
        "/cookies/attributes",
    ),
    (
        "testpath2",
        lambda c: f"testpath2=t; Path=/cookies/attributes{c}",
        "testpath2=t",
        "/cookies/attributes",
    ),
    ("testmaxage", lambda c: f"testmaxage=t; Max-Age=10{c}00; Max-Age=1000", "testmaxage=t", "/"),
    ("testmaxage2", lambda c: f"testmaxage2=t; Max-Age=1000{c}", "testmaxage2=t", "/"),
    (
        "testexpires",
        lambda c: (
            f"testexpires=t; Expires=Fri, 01 Jan 20{c}38 00:00:00 GMT"
            "; Expires=Fri, 01 Jan 2038 00:00:00 GMT"
        ),
        "testexpires=t",
        "/",
    ),
    (
        "testexpires2",
        lambda c: f"testexpires2=t; Expires=Fri, 01 Jan 2038 00:00:00 GMT{c}",
        "testexpires2=t",
        "/",
    ),
    ("testsecure", lambda c: f"testsecure=t; Sec{c}ure", "testsecure=t", "/"),
    ("testhttponly", lambda c: f"testhttponly=t; Http{c}Only", "testhttponly=t", "/"),
    (
        "testsamesite",
        lambda c: f"testsamesite=t; SameSite=No{c}ne; SameSite=None",
        "testsamesite=t",
        "/",
    ),
    ("testsamesite2", lambda c: f"testsamesite2=t; SameSite=None{c}", "testsamesite2=t", "/"),
    ("name", lambda c: f"test{c}name={c}", "test\tname=", "/cookies/name"),
    ("value", lambda c: f"test={c}value", "test=value", "/cookies/value"),
]


@pytest.mark.parametrize(("name", "build", "tab_expected", "path"), CTL_CASES)
def test_wpt_ctl(name: str, build: Any, tab_expected: str, path: str) -> None:
    for ctl in CTLS:
        store = ListStore()
        set_all(store, [build(ctl)], URI("http", HOST, "/cookie-set"))
        got = header_for(store, URI("http", HOST, path))
        assert got == (tab_expected if ctl == "\t" else ""), (name, ctl)


def test_wpt_secure2_ctl() -> None:
    # "testsecure2=t; Secure<CTL>": only HTAB keeps the cookie, and Secure needs https.
    for scheme, tab_expected in (("http", ""), ("https", "testsecure2=t")):
        for ctl in CTLS:
            store = ListStore()
            set_all(store, [f"testsecure2=t; Secure{ctl}"], URI(scheme, HOST, "/cookie-set"))
            got = header_for(store, URI(scheme, HOST, "/"))
            assert got == (tab_expected if ctl == "\t" else ""), (scheme, ctl)


# --------------------------------------------------------------------------------------
# WPT: domain


def test_wpt_domain_with_and_without_leading_period() -> None:
    store = ListStore()
    uri = URI("http", HOST, "/path/to/resource")
    set_all(store, [f"a=b; Path=/; Domain=.{HOST}"], uri)
    assert header_for(store, uri) == "a=b"
    assert header_for(store, uri._replace(host="sub." + HOST)) == "a=b"
    set_all(store, [f"a=c; Path=/; Domain={HOST}"], uri)  # overrides the first
    assert header_for(store, uri) == "a=c"
    assert header_for(store, uri._replace(host="sub." + HOST)) == "a=c"


def test_wpt_domain_matches_host() -> None:
    store = ListStore()
    uri = URI("http", HOST, "/path/to/resource")
    set_all(store, [f"a=c; Path=/; Domain={HOST}"], uri)
    assert header_for(store, uri._replace(host="sub." + HOST)) == "a=c"


def test_wpt_domain_missing_is_host_only() -> None:
    store = ListStore()
    uri = URI("http", HOST, "/path/to/resource")
    set_all(store, ["a=c; Path=/"], uri)
    assert header_for(store, uri) == "a=c"
    assert header_for(store, uri._replace(host="sub." + HOST)) == ""


def test_domain_of_another_site_is_refused() -> None:
    store = ListStore()
    uri = URI("http", HOST, "/")
    assert set_cookie(store, uri, "a", "b", {"domain": "example.org"}) == (
        "error",
        "domain_match_failed",
    )
    assert set_cookie(store, uri, "a", "b", {"domain": "sub." + HOST}) == (
        "error",
        "domain_match_failed",
    )


def test_public_suffix_domain() -> None:
    store = ListStore()
    # A public suffix as Domain: refused, unless it is the host itself (host-only then).
    assert set_cookie(store, URI("http", "example.com", "/"), "a", "b", {"domain": "com"}) == (
        "error",
        "domain_is_public_suffix",
    )
    assert (
        set_cookie(store, URI("http", "localhost", "/"), "a", "b", {"domain": "localhost"}) == "ok"
    )
    (c,) = store.cookies
    assert c.host_only and c.domain == "localhost"


# --------------------------------------------------------------------------------------
# WPT: encoding, name, value


ENCODING = [
    ("test=1春节回家路·春运完全手册", "test=1春节回家路·春运完全手册"),
    ("тест=2", "тест=2"),
    ('test="3春节回家路·春运完全手册"', 'test="3春节回家路·春运完全手册"'),
    ("春节回=4家路·春运完全手册", "春节回=4家路·春运完全手册"),
    ('"春节回=5家路·春运完全手册"', '"春节回=5家路·春运完全手册"'),
    ("春节回=6家路·春运; 完全手册", "春节回=6家路·春运"),
]


@pytest.mark.parametrize(("cookie", "expected"), ENCODING)
def test_wpt_encoding(cookie: str, expected: str) -> None:
    wpt(cookie, expected, test_path="/cookies/encoding")


NAME: list[tuple[Any, str, bool]] = [
    ("test1=;  path = /", "test1=", False),
    ("=test=2", "test=2", True),
    ("===test=2b", "==test=2b", True),
    ("=test2c", "test2c", True),
    ("test =3", "test=3", True),
    ("   test=4", "test=4", True),
    (['"test=5"=test', '"test=5'], '"test=5', True),
    ("test6;cool=dude", "test6", True),
    ("$Version=1; test=7", "$Version=1", True),
    ("test test=8", "test test=8", True),
    ('"test9;test"=9', '"test9', True),
    ('"test"10;baz"=qux', '"test"10', True),
    (["=test=11", "test11"], "test11", True),
    (["test11", "test11a"], "test11a", True),
    (["test11", "test11a", "=test11b"], "test11b", True),
    (["test11", "test11a", "=test11b", "test=11c"], "test11b; test=11c", True),
    (["test12=11", "test12=12"], "test12=12", True),
    (["testA=13", "testB=13"], "testA=13; testB=13", True),
    (["a=test14", "z=test14"], "a=test14; z=test14", True),
    (["z=test15", "a=test15"], "z=test15; a=test15", True),
    ("z=test16, a=test16", "z=test16, a=test16", True),
    (["testA=16", "=test16", "testB=16"], "testA=16; test16; testB=16", True),
    (["test17a", "test17b"], "test17b", True),
    ("=", "", True),
    ("", "", True),
    ("%74%65%73%74=20", "%74%65%73%74=20", True),
]


@pytest.mark.parametrize(("cookie", "expected", "dp"), NAME)
def test_wpt_name(cookie: Any, expected: str, dp: bool) -> None:
    wpt(cookie, expected, dp, test_path="/cookies/name")


VALUE: list[tuple[Any, str]] = [
    ("test=1, baz=qux", "test=1, baz=qux"),
    ('test="2, baz=qux"', 'test="2, baz=qux"'),
    ('test="3zz;pp" ; ;', 'test="3zz'),
    ('test="4zz ;', 'test="4zz'),
    ('test="5zzz "   "ppp"  ;', 'test="5zzz "   "ppp"'),
    ('test=6A"B ;', 'test=6A"B'),
    ("test7", "test7"),
    ('"test8"HHH"', '"test8"HHH"'),
    ('test="9', 'test="9'),
    ("=test10", "test10"),
    ("test=11" + "a" * 4090, "test=11" + "a" * 4090),  # name + value = 4096 bytes
    ("test=12" + "a" * 4091, ""),  # 4097 bytes
    ('test="14 "   ;', 'test="14 "'),
    ("test=15    ;", "test=15"),
    ("test=  16", "test=16"),
    ('test="17"', 'test="17"'),
    ('test="  18 "', 'test="  18 "'),
    ('test="19;wow"', 'test="19'),
    ('test="20=20"', 'test="20=20"'),
    ("test\t=\t21\t \t;\tttt", "test=21"),
    (["testA=22", "test22=", "testB=22"], "testA=22; test22=; testB=22"),
    ("test=%32%33", "test=%32%33"),
    ("test24==", "test24=="),
    ("test=25=25", "test=25=25"),
    ("test=26=26=26", "test=26=26=26"),
    ("test=27 test", "test=27 test"),
    (" test test28 ;", "test test28"),
]


@pytest.mark.parametrize(("cookie", "expected"), VALUE)
def test_wpt_value(cookie: Any, expected: str) -> None:
    wpt(cookie, expected, test_path="/cookies/value")


def test_value_with_lf_is_ignored() -> None:
    # WPT sets "test=13\nZYX" through the DOM; over HTTP RFC 6265bis 5.6 drops it.
    wpt("test=13\nZYX", "")


# --------------------------------------------------------------------------------------
# WPT: size


def test_wpt_size_name_and_value() -> None:
    name = "t" * 2048
    wpt(f"{name}={'1' * 2048}", f"{name}={'1' * 2048}")  # 4096 bytes: kept
    wpt(f"{'t' * 4096}=1", "")  # 4097: ignored
    wpt(f"{name}={'1' * 2049}", "")


def test_wpt_size_attributes() -> None:
    long_path = "/cookies/size" + "e" * 1100  # over 1024 bytes: the attribute is ignored
    wpt(f"test=1; path=/cookies/size; path={long_path}", "test=1", False, test_path="/cookies/size")
    wpt(f"test=2; path={long_path}; path=/cookies/size", "test=2", False, test_path="/cookies/size")
    max_path = "/" + "a" * 1023  # exactly 1024 bytes: kept (and does not match)
    wpt(f"test=3; path={max_path};", "", False, test_path="/cookies/size")
    wpt(f"test=4; path=/{'a' * 1024};", "test=4", False, test_path="/cookies/size")
    long_domain = "a" * 1100 + ".com"
    wpt(f"test=5; domain={HOST}; domain={long_domain}", "test=5")
    wpt(f"test=6; domain={long_domain}; domain={HOST}", "test=6")
    max_domain = "a" * 1020 + ".com"  # 1024 bytes: kept, and does not domain-match
    wpt(f"test=7; domain={max_domain};", "")
    wpt(f"test=8; domain={'a' * 1021}.com;", "test=8")


# --------------------------------------------------------------------------------------
# WPT: path default, path match


def test_wpt_path_default() -> None:
    store = ListStore()
    uri = URI("http", HOST, "/path/to/resource")
    set_all(store, ["cookies-path-default=1"], uri)
    assert [c.path for c in query(store, uri)] == ["/path/to"]
    for p in ("/path/to/other", "/path/to/resource/sub"):
        assert header_for(store, uri._replace(path=p)) == "cookies-path-default=1"
    for p in ("/path", "/path/toon", "/"):
        assert header_for(store, uri._replace(path=p)) == ""
    set_all(store, ["cookies-path-default=1; Max-Age=0"], uri)
    assert header_for(store, uri) == ""


@pytest.mark.parametrize(
    ("path", "matches"),
    [
        ("/", True),
        ("match.html", True),
        ("cookies", True),
        ("/cookies", True),
        ("/cookies/", True),
        ("/cookies/resources/echo-cookie.html", True),
        ("/cook", False),
        ("/w/", False),
    ],
)
def test_wpt_path_match(path: str, matches: bool) -> None:
    store = ListStore()
    uri = URI("http", HOST, "/cookies/resources/echo-cookie.html")
    set_all(store, [f"a=b; Path={path}"], uri)
    assert header_for(store, uri) == ("a=b" if matches else "")
    if matches:
        set_all(store, [f"a=b; Max-Age=0; Path={path}"], uri)
        assert header_for(store, uri) == ""


# --------------------------------------------------------------------------------------
# WPT: prefixes, secure

PREFIX_HOST = [
    # (scheme, set-cookie, stored)
    ("http", "__Host-foo=bar; Path=/;", False),
    ("http", f"__Host-foo=bar; Path=/;domain={HOST}", False),
    ("http", "__Host-foo=bar; Path=/;Max-Age=10", False),
    ("http", "__Host-foo=bar; Path=/;HttpOnly", False),
    ("http", "__Host-foo=bar; Secure; Path=/;", False),
    ("http", f"__Host-foo=bar; Secure; Path=/;domain={HOST}", False),
    ("http", "__Host-foo=bar; Secure; Path=/;Max-Age=10", False),
    ("http", "__Host-foo=bar; Secure; Path=/;HttpOnly", False),
    ("http", f"__Host-foo=bar; Secure; Path=/; Domain={HOST}; ", False),
    ("http", f"__Host-foo=bar; Secure; Path=/; Domain={HOST}; domain={HOST}", False),
    ("http", f"__Host-foo=bar; Secure; Path=/; Domain={HOST}; Max-Age=10", False),
    ("http", f"__Host-foo=bar; Secure; Path=/; Domain={HOST}; HttpOnly", False),
    ("http", "__Host-foo=bar; Secure; Path=/cookies/resources/list.py", False),
    ("https", "__Host-foo=bar; Path=/;", False),
    ("https", "__Host-foo=bar; Path=/;Max-Age=10", False),
    ("https", "__Host-foo=bar; Path=/;HttpOnly", False),
    ("https", "__Host-foo=bar; Secure; Path=/;", True),
    ("https", "__Host-foo=bar; Secure; Path=/;Max-Age=10", True),
    ("https", "__Host-foo=bar; Secure; Path=/;HttpOnly", True),
    ("https", f"__Host-foo=bar; Secure; Path=/; Domain={HOST}; ", False),
    ("https", f"__Host-foo=bar; Secure; Path=/; Domain={HOST}; Max-Age=10", False),
    ("https", f"__Host-foo=bar; Secure; Path=/; Domain={HOST}; HttpOnly", False),
    ("https", "__Host-foo=bar; Secure; Path=/cookies/resources/list.py", False),
    # gunpy: the current draft matches prefixes case-insensitively.
    ("https", "__HOST-foo=bar; Secure; Path=/cookies/", False),
    ("https", "__host-foo=bar; Secure; Path=/;", True),
]

PREFIX_SECURE = [
    ("http", "__Secure-foo=bar; Path=/;", False),
    ("http", f"__Secure-foo=bar; Path=/;domain={HOST}", False),
    ("http", "__Secure-foo=bar; Path=/;Max-Age=10", False),
    ("http", "__Secure-foo=bar; Path=/;HttpOnly", False),
    ("http", "__Secure-foo=bar; Secure; Path=/;", False),
    ("http", f"__Secure-foo=bar; Secure; Path=/;domain={HOST}", False),
    ("http", "__Secure-foo=bar; Secure; Path=/;Max-Age=10", False),
    ("http", "__Secure-foo=bar; Secure; Path=/;HttpOnly", False),
    ("https", "__Secure-foo=bar; Path=/;", False),
    ("https", "__Secure-foo=bar; Path=/;Max-Age=10", False),
    ("https", "__Secure-foo=bar; Path=/;HttpOnly", False),
    ("https", "__Secure-foo=bar; Secure; Path=/;", True),
    ("https", "__Secure-foo=bar; Secure; Path=/;Max-Age=10", True),
    ("https", "__Secure-foo=bar; Secure; Path=/;HttpOnly", True),
    ("https", "__SECURE-foo=bar; Path=/;", False),
    # A nameless cookie may not carry a prefix in its value (RFC 6265bis 5.7).
    ("https", "=__Secure-foo; Secure; Path=/;", False),
    ("https", "__Host-foo; Secure; Path=/;", False),
]


@pytest.mark.parametrize(("scheme", "header", "stored"), PREFIX_HOST + PREFIX_SECURE)
def test_wpt_prefixes(scheme: str, header: str, stored: bool) -> None:
    store = ListStore()
    set_all(store, [header], URI(scheme, HOST, "/cookies/resources/set.py"))
    got = query(store, URI(scheme, HOST, "/cookies/resources/list.py"))
    assert (len(got) == 1) is stored


def test_wpt_secure_from_https_and_http() -> None:
    store = ListStore()
    uri = URI("https", HOST, "/cookies/secure/any.html")
    set_all(store, ["secure_from_secure_http=1; Secure; Path=/"], uri)
    assert header_for(store, uri) == "secure_from_secure_http=1"
    assert header_for(store, uri._replace(scheme="http")) == ""  # never sent in clear
    (name, value, attrs) = parse_set_cookie("secure_from_nonsecure_http=1; Secure; Path=/") or (
        "",
        "",
        {},
    )
    assert set_cookie(ListStore(), uri._replace(scheme="http"), name, value, attrs) == (
        "error",
        "secure_scheme_only",
    )


def test_insecure_cookie_cannot_shadow_a_secure_one() -> None:
    store = ListStore()
    set_all(store, ["a=secure; Secure; Path=/"], URI("https", HOST, "/"))
    set_all(store, ["a=plain; Path=/x"], URI("http", HOST, "/"))
    assert header_for(store, URI("https", HOST, "/x")) == "a=secure"
    # Over https the same cookie may be replaced.
    set_all(store, ["a=new; Path=/"], URI("https", HOST, "/"))
    assert header_for(store, URI("https", HOST, "/")) == "a=new"


def test_http_only_and_same_site_are_kept() -> None:
    store = ListStore()
    set_all(store, ["a=b; HttpOnly; SameSite=Strict"], URI("http", HOST, "/"))
    (c,) = store.cookies
    assert c.http_only and c.same_site == "strict"


# --------------------------------------------------------------------------------------
# The list store (gun_cookies_list) and the engine's gc


def test_gc_drops_expired_cookies() -> None:
    store = ListStore()
    uri = URI("http", "example.org", "/path/to/resource")
    now = time.time()
    store.store(
        Cookie("a", "b", "example.org", "/", now, now, now + 0.05, True, True, False, False)
    )
    cookies.gc(store)
    assert len(store) == 1
    time.sleep(0.1)
    cookies.gc(store)
    assert len(store) == 0
    set_all(store, ["s=s; Path=/"], uri)
    cookies.gc(store)
    assert header_for(store, uri) == "s=s"  # a session cookie never expires


def test_expired_cookies_are_not_sent() -> None:
    store = ListStore()
    now = time.time()
    store.store(Cookie("a", "b", HOST, "/", now, now, now + 0.05, True, True, False, False))
    time.sleep(0.1)
    assert header_for(store, URI("http", HOST, "/")) == ""
    assert len(store) == 0


def test_session_gc() -> None:
    store = ListStore()
    uri = URI("http", "example.org", "/path/to/resource")
    set_all(store, ["s=s; Path=/", "p=p; Path=/; Max-Age=999"], uri)
    cookies.session_gc(store)
    assert [c.name for c in query(store, uri)] == ["p"]
    (c,) = store.cookies
    assert c.persistent and not math.isinf(c.expiry_time)


def test_max_cookies_evicts_least_recently_used() -> None:
    store = ListStore.init({"max_cookies": 3})
    uri = URI("http", HOST, "/")
    set_all(store, ["a=1", "b=2", "c=3"], uri)
    query(store, uri._replace(path="/"))  # all accessed; then only a and c
    time.sleep(0.01)
    store.cookies[0].last_access_time = store.cookies[2].last_access_time = time.time()
    set_all(store, ["d=4"], uri)
    assert header_for(store, uri) == "a=1; c=3; d=4"
    zero = ListStore(max_cookies=0)
    set_all(zero, ["a=1"], uri)
    assert len(zero) == 0
    unlimited = ListStore(max_cookies="infinity")
    set_all(unlimited, [f"n{i}=v" for i in range(200)], uri)
    assert len(unlimited) == 200


def test_overwrite_keeps_creation_time_and_order() -> None:
    store = ListStore()
    uri = URI("http", HOST, "/")
    set_all(store, ["a=1", "b=2"], uri)
    created = store.cookies[0].creation_time
    set_all(store, ["a=3"], uri)
    assert header_for(store, uri) == "a=3; b=2"
    assert next(c for c in store.cookies if c.name == "a").creation_time == created


def test_list_store_options_are_checked() -> None:
    with pytest.raises(ValueError):
        ListStore.init({"max": 1})
    with pytest.raises(ValueError):
        ListStore(max_cookies=-1)
    assert isinstance(ListStore(), CookieStore)


def test_add_cookie_header_appends_last_and_keeps_the_input() -> None:
    store = ListStore()
    set_all(store, ["a=b; Path=/"], URI("https", "example.org", "/"))
    headers = [("accept", "*/*")]
    out = add_cookie_header(store, "https", "example.org:8443", "/x?y", headers)
    assert out == [("accept", "*/*"), ("cookie", "a=b")]
    assert headers == [("accept", "*/*")]
    assert add_cookie_header(store, "https", "other.org", "/", headers) is headers
    assert add_cookie_header(None, "https", "example.org", "/", headers) is headers


def test_set_cookie_header_informational() -> None:
    store = ListStore()
    hs = [("set-cookie", "informational=1")]
    set_cookie_header(store, "http", "h", "/", 103, hs, ignore_informational=True)
    set_cookie_header(store, "http", "h", "/", 101, hs, ignore_informational=True)
    assert len(store) == 0
    set_cookie_header(store, "http", "h", "/", 103, hs, ignore_informational=False)
    assert header_for(store, URI("http", "h", "/")) == "informational=1"


def test_a_failing_store_does_not_raise() -> None:
    class Broken(ListStore):
        def store(self, cookie: Cookie) -> None:
            raise RuntimeError("disk full")

    set_cookie_header(Broken(), "http", "h", "/", 200, [("set-cookie", "a=b")])


def test_shared_store_between_threads() -> None:
    import threading

    store = ListStore(max_cookies="infinity")
    uri = URI("http", HOST, "/")

    def worker(i: int) -> None:
        for j in range(50):
            set_all(store, [f"c{i}_{j}=v"], uri)
            query(store, uri)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(store) == 200
