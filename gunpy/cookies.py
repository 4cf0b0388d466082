"""Cookies: Gun's ``gun_cookies`` engine and ``gun_cookies_list`` store (RFC 6265bis).

Theory of operation
-------------------
With the ``cookie_store`` connection option, the HTTP/1.1 and HTTP/2 handlers call
two functions of this module, as Gun's protocol modules call ``gun_cookies``:

* ``add_cookie_header(store, scheme, authority, path, headers)`` before a request
  or a Websocket upgrade goes out: the cookies the store holds for that URI are
  appended as one ``cookie`` header, last (it is the least important header);
* ``set_cookie_header(store, scheme, authority, path, status, headers,
  ignore_informational)`` when a response head arrives: every ``set-cookie``
  header is parsed and, when the rules allow it, stored.  1xx responses count too
  (a ``101`` included) unless ``cookie_ignore_informational`` is set.

Tunnelled requests call the same two functions with the tunnel's origin.

The engine (this module's functions) holds the rules: parsing (RFC 6265bis 5.6),
the cookie-date algorithm (5.1.1), default-path, domain and path matching (5.1.3,
5.1.4), the Secure and HttpOnly flags, the ``__Secure-`` and ``__Host-`` name
prefixes, the size limits (4096 bytes for name plus value, 1024 for an attribute
value), Max-Age/Expires with the 400-day cap, public suffixes, and the order of
the ``cookie`` header (longer paths first, then older cookies).  SameSite is
parsed and kept, not enforced: a client without browsing contexts has no
"site for cookies".

The store holds cookies and answers Gun's backend callbacks (``CookieStore``
below): ``query``, ``set_cookie_secure_match``, ``set_cookie_get_exact_match``,
``store``, ``gc``, ``session_gc``.  ``ListStore`` is ``gun_cookies_list``: an
in-memory list, 50 cookies by default, evicting the least recently used.  Unlike
Gun's it may be shared by several connections (it has a lock, and the engine holds
it for a whole ``set_cookie``).

Types.  Header values are latin-1 ``str`` in gunpy, so a cookie is kept as the
bytes the server sent (UTF-8 in a ``set-cookie`` comes back unchanged in the
``cookie`` header); lengths are byte counts.  Times are seconds since the epoch
(``float``); a session cookie's ``expiry_time`` is ``math.inf``.

Why not ``http.cookiejar``.  The standard library's jar implements Netscape
cookies and RFC 2965, not RFC 6265bis.  Run on the cases Gun takes from the
web-platform-tests (Python 3.11), it drops a nameless cookie (``=test10``; RFC
6265bis keeps the value ``test10``) and a cookie whose ``Max-Age`` is malformed
(``Max-Age=50,399``: only the attribute must be ignored), keeps the first ``Path``
where the last one wins, ignores ``Path=`` (the default path must be used), stores
``test=1\x01x`` as ``test=1x`` (a control character voids the whole cookie),
accepts a name plus value over 4096 bytes, and takes ``__Host-foo=bar; Path=/``
over plain HTTP (the ``__Host-``/``__Secure-`` prefixes are unknown to it).  It
has no SameSite, no Public Suffix List (a "no dot" heuristic), no 400-day cap,
and wants ``urllib.request.Request`` objects.  What would fit (``http2time`` parses
HTTP dates, not the cookie-date algorithm of RFC 6265bis 5.1.1) is too little to
build on, so the engine is written here; ``ipaddress`` (for "a host name, not an
IP address") is the help taken from the standard library.
"""

from __future__ import annotations

import calendar
import functools
import ipaddress
import math
import os
import re
import threading
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol, runtime_checkable

__all__ = [
    "URI",
    "Cookie",
    "CookieStore",
    "ListStore",
    "add_cookie_header",
    "cookie_header_value",
    "domain_match",
    "gc",
    "is_public_suffix",
    "parse_set_cookie",
    "path_match",
    "query",
    "request_uri",
    "session_gc",
    "set_cookie",
    "set_cookie_header",
]

Headers = list[tuple[str, str]]

# RFC 6265bis 5.6 / 5.7 limits.
MAX_NAME_VALUE_SIZE = 4096
MAX_ATTRIBUTE_VALUE_SIZE = 1024
# RFC 6265bis 5.6.1/5.6.2: Max-Age and Expires are capped at 400 days.
MAX_AGE_LIMIT = 400 * 24 * 3600
# The earliest representable time: an expiry in the past (Max-Age <= 0).
EPOCH_START = 0.0
SECURE_SCHEMES = frozenset(("https", "wss"))


class URI(NamedTuple):
    """The request URI as the engine sees it: Gun's normalized ``uri_map()``."""

    scheme: str  # "http", "https" (lower case)
    host: str  # lower case, no port, no brackets around an IPv6 address
    path: str  # no query, no fragment


@dataclass(slots=True)
class Cookie:
    """One stored cookie: Gun's ``gun_cookies:cookie()`` map, as a dataclass."""

    name: str
    value: str
    domain: str
    path: str
    creation_time: float
    last_access_time: float
    expiry_time: float  # math.inf: a session cookie (Gun's infinity)
    persistent: bool
    host_only: bool
    secure_only: bool
    http_only: bool
    same_site: str = "none"  # "strict", "lax" or "none": parsed, not enforced

    def expired(self, now: float) -> bool:
        return self.expiry_time <= now


@runtime_checkable
class CookieStore(Protocol):
    """A cookie store backend: Gun's ``gun_cookies`` callbacks, as methods.

    Gun's callbacks return the new state; a Python store is an object that changes
    in place.  ``init`` is the constructor (``ListStore.init(opts)`` exists for
    Gun's spelling).  A store may have a ``lock`` attribute (a context manager): the
    engine holds it around a whole ``set_cookie`` (three callbacks).
    """

    def query(self, uri: URI) -> list[Cookie]:
        """Cookies that match ``uri`` (domain, path, secure), in any order; their
        ``last_access_time`` updated."""
        ...

    def set_cookie_secure_match(self, cookie: Cookie) -> bool:
        """Whether a secure cookie with ``cookie``'s name, whose domain and
        ``cookie``'s domain domain-match, and whose path ``cookie``'s path
        path-matches, is stored (Gun: ``match`` / ``nomatch``)."""
        ...

    def set_cookie_get_exact_match(self, cookie: Cookie) -> Cookie | None:
        """Remove and return the stored cookie with the same name, domain,
        host-only flag and path, or None (Gun: ``{ok, Cookie, State}`` / ``error``)."""
        ...

    def store(self, cookie: Cookie) -> None:
        """Add ``cookie`` (one whose expiry is past is not kept)."""
        ...

    def gc(self) -> None:
        """Drop expired cookies (and trim to the store's limits)."""
        ...

    def session_gc(self) -> None:
        """Drop the session (non-persistent) cookies."""
        ...


# --------------------------------------------------------------------------------------
# Time

_last_time = 0.0
_time_lock = threading.Lock()


def _unique_now() -> float:
    """A strictly increasing ``time.time()``: cookies set in one read keep their
    order (RFC 6265bis 5.8.3: earlier creation-times first)."""
    global _last_time
    with _time_lock:
        now = time.time()
        if now <= _last_time:
            now = _last_time + 1e-6
        _last_time = now
        return now


# --------------------------------------------------------------------------------------
# Matching (RFC 6265bis 5.1.3, 5.1.4)


@functools.lru_cache(maxsize=256)
def _is_ip(host: str) -> bool:
    if ":" not in host and not host[-1:].isdigit():
        return False  # neither IPv6 nor dotted IPv4: a host name (the common case)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def domain_match(string: str, domain_string: str) -> bool:
    """RFC 6265bis 5.1.3: does ``string`` domain-match ``domain_string``?

    Both lower case.  Identical strings match; otherwise ``string`` must end with
    ``"." + domain_string`` and be a host name, not an IP address.
    """
    if string == domain_string:
        return True
    return string.endswith("." + domain_string) and not _is_ip(string)


def path_match(request_path: str, cookie_path: str) -> bool:
    """RFC 6265bis 5.1.4: does ``request_path`` path-match ``cookie_path``?"""
    if request_path == cookie_path:
        return True
    if not request_path.startswith(cookie_path):
        return False
    return cookie_path.endswith("/") or request_path[len(cookie_path)] == "/"


def default_path(uri_path: str) -> str:
    """RFC 6265bis 5.1.4: the directory of the request path."""
    if not uri_path.startswith("/"):
        return "/"
    i = uri_path.rfind("/")
    return "/" if i == 0 else uri_path[:i]


def request_uri(scheme: str, authority: str, path: str) -> URI:
    """Gun's ``uri_string:parse`` + ``normalize`` of ``Scheme://Authority Path``.

    ``authority`` is what the ``host`` header (HTTP/1.1) or ``:authority`` (HTTP/2)
    says; its port and an IPv6 address's brackets are dropped, the host is lower
    case; the query and fragment leave the path.
    """
    host = authority.strip()
    if "@" in host:
        host = host.rsplit("@", 1)[1]
    if host.startswith("["):
        end = host.find("]")
        host = host[1:end] if end > 0 else host[1:]
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    for sep in ("?", "#"):
        i = path.find(sep)
        if i >= 0:
            path = path[:i]
    return URI(scheme.lower(), host.rstrip(".").lower(), path)


# --------------------------------------------------------------------------------------
# Public suffixes

_PSL_PATHS = (
    "/usr/share/publicsuffix/public_suffix_list.dat",
    "/usr/share/publicsuffix/effective_tld_names.dat",
)
_psl: tuple[frozenset[str], frozenset[str], frozenset[str]] | None = None
_psl_lock = threading.Lock()


def _idna(label_string: str) -> str:
    try:
        return label_string.encode("idna").decode("ascii")
    except UnicodeError:
        return label_string


def _load_psl(path: str | None = None) -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
    """The rules, wildcard parents and exceptions of the Public Suffix List.

    ``GUNPY_PUBLIC_SUFFIX_LIST`` names the file; else the system's copy (Debian's
    ``publicsuffix`` package).  Without one, only the list's default rule applies
    (every single label, such as ``com``, is a public suffix).
    """
    rules: set[str] = set()
    wild: set[str] = set()
    exc: set[str] = set()
    candidates = [path] if path else [os.environ.get("GUNPY_PUBLIC_SUFFIX_LIST", ""), *_PSL_PATHS]
    for p in candidates:
        if not p or not os.path.exists(p):
            continue
        with open(p, encoding="utf-8") as f:
            for line in f:
                rule = line.strip().split(" ", 1)[0].lower()
                if not rule or rule.startswith("//"):
                    continue
                if rule.startswith("!"):
                    exc.add(rule[1:])
                    exc.add(_idna(rule[1:]))
                elif rule.startswith("*."):
                    wild.add(rule[2:])
                    wild.add(_idna(rule[2:]))
                else:
                    rules.add(rule)
                    rules.add(_idna(rule))
        break
    return frozenset(rules), frozenset(wild), frozenset(exc)


def is_public_suffix(domain: str) -> bool:
    """Whether ``domain`` (lower case) is a public suffix (``com``, ``co.uk``...).

    The Public Suffix List algorithm, reduced to this question: the prevailing
    rule covers all of ``domain``'s labels.
    """
    global _psl
    if _psl is None:
        with _psl_lock:
            if _psl is None:
                _psl = _load_psl()
    rules, wild, exc = _psl
    domain = domain.rstrip(".")
    if not domain or domain in exc:
        return False
    if domain in rules or "." not in domain:
        return True
    return domain.split(".", 1)[1] in wild


# --------------------------------------------------------------------------------------
# Parsing (RFC 6265bis 5.6)

# %x00-08 / %x0A-1F / %x7F: a set-cookie-string holding one is ignored (HTAB is not).
_CTL_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_WSP = " \t"
_MAX_AGE_RE = re.compile(r"-?[0-9]+")

# Cookie-date (RFC 6265bis 5.1.1).
_DELIMS_RE = re.compile(r"[\x09\x20-\x2f\x3b-\x40\x5b-\x60\x7b-\x7e]+")
_TIME_RE = re.compile(r"([0-9]{1,2}):([0-9]{1,2}):([0-9]{1,2})(?:[^0-9].*)?", re.S)
_DAY_RE = re.compile(r"([0-9]{1,2})(?:[^0-9].*)?", re.S)
_YEAR_RE = re.compile(r"([0-9]{2,4})(?:[^0-9].*)?", re.S)
_MONTHS = {
    m: i
    for i, m in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1
    )
}


def parse_cookie_date(text: str) -> float | None:
    """RFC 6265bis 5.1.1: seconds since the epoch (UTC), or None when it fails."""
    hms: tuple[int, int, int] | None = None
    day = month = year = None
    for token in _DELIMS_RE.split(text):
        if not token:
            continue
        if hms is None and (m := _TIME_RE.fullmatch(token)):
            hms = (int(m[1]), int(m[2]), int(m[3]))
        elif day is None and (m := _DAY_RE.fullmatch(token)):
            day = int(m[1])
        elif month is None and token[:3].lower() in _MONTHS:
            month = _MONTHS[token[:3].lower()]
        elif year is None and (m := _YEAR_RE.fullmatch(token)):
            year = int(m[1])
    if hms is None or day is None or month is None or year is None:
        return None
    if 70 <= year <= 99:
        year += 1900
    elif 0 <= year <= 69:
        year += 2000
    if not 1 <= day <= 31 or year < 1601 or hms[0] > 23 or hms[1] > 59 or hms[2] > 59:
        return None
    if day > calendar.monthrange(year, month)[1]:
        return None
    return float(calendar.timegm((year, month, day, *hms, 0, 0, 0)))


def parse_set_cookie(set_cookie: str) -> tuple[str, str, dict[str, Any]] | None:
    """RFC 6265bis 5.6: ``(name, value, attrs)`` or None (Gun: ``ignore``).

    ``attrs`` keys as in Gun's ``cow_cookie:cookie_attrs()``: ``expires`` (a time),
    ``max_age`` (an expiry time computed now), ``domain`` (lower case, without its
    leading dot), ``path``, ``secure``, ``http_only``, ``same_site``.  For each
    attribute the last valid one wins; an unknown one is ignored.
    """
    if _CTL_RE.search(set_cookie):
        return None
    nvp, sep, unparsed = set_cookie.partition(";")
    name, eq, value = nvp.partition("=")
    if not eq:
        name, value = "", name
    name = name.strip(_WSP)
    value = value.strip(_WSP)
    if not name and not value:
        return None
    if len(name) + len(value) > MAX_NAME_VALUE_SIZE:
        return None
    attrs: dict[str, Any] = {}
    if sep:
        for av in unparsed.split(";"):
            aname, _, avalue = av.partition("=")
            aname = aname.strip(_WSP).lower()
            avalue = avalue.strip(_WSP)
            if len(avalue) > MAX_ATTRIBUTE_VALUE_SIZE:
                continue
            _parse_attr(attrs, aname, avalue)
    return name, value, attrs


def _parse_attr(attrs: dict[str, Any], name: str, value: str) -> None:
    if name == "expires":
        t = parse_cookie_date(value)
        if t is not None:
            attrs["expires"] = min(t, time.time() + MAX_AGE_LIMIT)
    elif name == "max-age":
        if _MAX_AGE_RE.fullmatch(value):
            seconds = int(value)
            if seconds <= 0:
                attrs["max_age"] = EPOCH_START
            else:
                attrs["max_age"] = time.time() + min(seconds, MAX_AGE_LIMIT)
    elif name == "domain":
        if value:
            attrs["domain"] = (value[1:] if value.startswith(".") else value).lower()
    elif name == "path":
        if value.startswith("/"):
            attrs["path"] = value
        else:
            attrs.pop("path", None)  # the default-path is used
    elif name == "secure":
        attrs["secure"] = True
    elif name == "httponly":
        attrs["http_only"] = True
    elif name == "samesite":
        v = value.lower()
        if v in ("strict", "lax", "none"):
            attrs["same_site"] = v
        else:
            attrs["same_site"] = "default"  # unknown values and no value are alike


# --------------------------------------------------------------------------------------
# The storage model (RFC 6265bis 5.7) and retrieval (5.8.3)


def _locked(store: Any) -> Any:
    lock = getattr(store, "lock", None)
    return lock if lock is not None else nullcontext()


def set_cookie(
    store: CookieStore, uri: URI, name: str, value: str, attrs: dict[str, Any]
) -> str | tuple[str, str]:
    """Store one parsed cookie set by a response to ``uri``: ``"ok"`` or
    ``("error", reason)`` with Gun's reasons (``"secure_scheme_only"``,
    ``"domain_match_failed"``, ``"name_prefix_host_requires_secure_only"``...)."""
    if len(name) + len(value) > MAX_NAME_VALUE_SIZE:
        return ("error", "larger_than_4096_bytes")
    now = _unique_now()
    if "max_age" in attrs:
        expiry, persistent = attrs["max_age"], True
    elif "expires" in attrs:
        expiry, persistent = attrs["expires"], True
    else:
        expiry, persistent = math.inf, False
    host = uri.host
    domain = attrs.get("domain", "")
    if domain and is_public_suffix(domain):
        if domain != host:
            return ("error", "domain_is_public_suffix")
        domain = ""
    if domain:
        if not domain_match(host, domain):
            return ("error", "domain_match_failed")
        host_only = False
    else:
        domain, host_only = host, True
    path = attrs.get("path") or default_path(uri.path)
    secure = bool(attrs.get("secure", False))
    secure_scheme = uri.scheme in SECURE_SCHEMES
    if secure and not secure_scheme:
        return ("error", "secure_scheme_only")
    cookie = Cookie(
        name=name,
        value=value,
        domain=domain,
        path=path,
        creation_time=now,
        last_access_time=now,
        expiry_time=expiry,
        persistent=persistent,
        host_only=host_only,
        secure_only=secure,
        http_only=bool(attrs.get("http_only", False)),
        same_site=attrs.get("same_site", "none"),
    )
    # RFC 6265bis 5.7: the name prefixes (matched case-insensitively, as the
    # current draft says), and a nameless cookie may not smuggle one in its value.
    lname = (name or value).lower()
    if lname.startswith("__secure-") and (not secure or not name):
        return ("error", "name_prefix_secure_requires_secure_only")
    if lname.startswith("__host-"):
        if not name or not secure:
            return ("error", "name_prefix_host_requires_secure_only")
        if not host_only:
            return ("error", "name_prefix_host_requires_host_only")
        if attrs.get("path") != "/":
            return ("error", "name_prefix_host_requires_top_level_path")
    with _locked(store):
        if not secure and not secure_scheme and store.set_cookie_secure_match(cookie):
            return ("error", "secure_cookie_matches")
        old = store.set_cookie_get_exact_match(cookie)
        if old is not None:
            cookie.creation_time = old.creation_time
        store.store(cookie)
    return "ok"


def query(store: CookieStore, uri: URI) -> list[Cookie]:
    """The cookies to send to ``uri``, in the ``cookie`` header's order: longer
    paths first, then earlier creation times (RFC 6265bis 5.8.3)."""
    cookies = store.query(uri)  # a store with a lock takes it itself
    if len(cookies) > 1:
        cookies.sort(key=_cookie_order)
    return cookies


def _cookie_order(c: Cookie) -> tuple[int, float]:
    return (-len(c.path), c.creation_time)


def cookie_header_value(cookies: list[Cookie]) -> str:
    """``name=value; name2=value2`` (a nameless cookie is its value alone)."""
    return "; ".join(f"{c.name}={c.value}" if c.name else c.value for c in cookies)


def gc(store: CookieStore) -> None:
    with _locked(store):
        store.gc()


def session_gc(store: CookieStore) -> None:
    with _locked(store):
        store.session_gc()


# --------------------------------------------------------------------------------------
# The two hooks the protocol handlers (and tunnels) call


def add_cookie_header(
    store: CookieStore | None, scheme: str, authority: str, path: str, headers: Headers
) -> Headers:
    """``headers`` plus, when the store holds cookies for this URI, a ``cookie``
    header appended last (Gun's ``gun_cookies:add_cookie_header/5``).

    ``scheme`` is ``"http"`` or ``"https"``, ``authority`` the request's host header
    or ``:authority``, ``path`` the request target.  The list given is not changed.
    """
    if store is None:
        return headers
    cookies = query(store, request_uri(scheme, authority, path))
    if not cookies:
        return headers
    return [*headers, ("cookie", cookie_header_value(cookies))]


def set_cookie_header(
    store: CookieStore | None,
    scheme: str,
    authority: str,
    path: str,
    status: int,
    headers: Headers,
    ignore_informational: bool = False,
) -> None:
    """Store what the ``set-cookie`` headers of a response to ``scheme://authority
    path`` allow (Gun's ``gun_cookies:set_cookie_header/7``).

    With ``ignore_informational`` (the ``cookie_ignore_informational`` option) a 1xx
    response's cookies are ignored, a ``101`` included.  Never raises: a cookie
    the rules refuse is dropped, as Gun drops it.
    """
    if store is None or (ignore_informational and 100 <= status <= 199):
        return
    uri: URI | None = None
    for n, v in headers:
        if n != "set-cookie":
            continue
        parsed = parse_set_cookie(v)
        if parsed is None:
            continue
        if uri is None:
            uri = request_uri(scheme, authority, path)
        try:
            set_cookie(store, uri, *parsed)
        except Exception:  # a store's bug must not take the connection down
            continue


# --------------------------------------------------------------------------------------
# gun_cookies_list


@dataclass
class ListStore:
    """An in-memory cookie store: Gun's ``gun_cookies_list``.

    ``max_cookies`` (default 50, ``"infinity"`` for no limit): when a new cookie
    would go over it, expired cookies go first, then the least recently accessed
    (then oldest). Thread-safe; may be shared by several connections.
    """

    max_cookies: int | str = 50
    cookies: list[Cookie] = field(default_factory=list)
    lock: Any = field(default_factory=threading.RLock, repr=False, compare=False)

    def __post_init__(self) -> None:
        m = self.max_cookies
        if m != "infinity" and (isinstance(m, bool) or not isinstance(m, int) or m < 0):
            raise ValueError(f"max_cookies must be an integer >= 0 or 'infinity', not {m!r}")

    @classmethod
    def init(cls, opts: dict[str, Any] | None = None) -> ListStore:
        """Gun's ``gun_cookies_list:init/0,1``: ``ListStore.init({"max_cookies": 10})``."""
        opts = dict(opts or {})
        unknown = set(opts) - {"max_cookies"}
        if unknown:
            raise ValueError(f"unknown ListStore option(s): {sorted(unknown)}")
        return cls(max_cookies=opts.get("max_cookies", 50))

    # -- the backend callbacks --------------------------------------------------------
    def query(self, uri: URI) -> list[Cookie]:
        now = time.time()
        with self.lock:
            out = []
            keep = []
            for c in self.cookies:
                if c.expired(now):
                    continue  # RFC 6265bis 5.7: expired cookies are evicted
                keep.append(c)
                if c.host_only:
                    if c.domain != uri.host:
                        continue
                elif not domain_match(uri.host, c.domain):
                    continue
                if not path_match(uri.path or "/", c.path):
                    continue
                if c.secure_only and uri.scheme not in SECURE_SCHEMES:
                    continue
                c.last_access_time = now
                out.append(c)
            self.cookies = keep
            return out

    def set_cookie_secure_match(self, cookie: Cookie) -> bool:
        with self.lock:
            return any(
                c.secure_only
                and c.name == cookie.name
                and (domain_match(cookie.domain, c.domain) or domain_match(c.domain, cookie.domain))
                and path_match(cookie.path, c.path)
                for c in self.cookies
            )

    def set_cookie_get_exact_match(self, cookie: Cookie) -> Cookie | None:
        key = (cookie.name, cookie.domain, cookie.host_only, cookie.path)
        with self.lock:
            for i, c in enumerate(self.cookies):
                if (c.name, c.domain, c.host_only, c.path) == key:
                    del self.cookies[i]
                    return c
            return None

    def store(self, cookie: Cookie) -> None:
        now = time.time()
        with self.lock:
            if cookie.expired(now) or self.max_cookies == 0:
                return
            cookies = [c for c in self.cookies if not c.expired(now)]
            if self.max_cookies != "infinity":
                assert isinstance(self.max_cookies, int)
                cookies = _trim(cookies, self.max_cookies - 1)
            cookies.append(cookie)
            self.cookies = cookies

    def gc(self) -> None:
        now = time.time()
        with self.lock:
            cookies = [c for c in self.cookies if not c.expired(now)]
            if self.max_cookies != "infinity":
                assert isinstance(self.max_cookies, int)
                cookies = _trim(cookies, self.max_cookies)
            self.cookies = cookies

    def session_gc(self) -> None:
        with self.lock:
            self.cookies = [c for c in self.cookies if c.persistent]

    # -- conveniences ---------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.cookies)

    def __iter__(self) -> Iterator[Cookie]:
        with self.lock:
            return iter(list(self.cookies))

    def clear(self) -> None:
        with self.lock:
            self.cookies = []


def _trim(cookies: list[Cookie], keep: int) -> list[Cookie]:
    """Keep ``keep`` cookies: evict the earliest last-access-time, then the
    earliest creation-time (RFC 6265bis 5.7), preserving the others' order."""
    if keep <= 0:
        return []
    if len(cookies) <= keep:
        return cookies
    order = sorted(cookies, key=lambda c: (c.last_access_time, c.creation_time))
    evict = {id(c) for c in order[: len(cookies) - keep]}
    return [c for c in cookies if id(c) not in evict]
