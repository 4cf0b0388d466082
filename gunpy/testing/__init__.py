"""gunpy.testing: mailbox assertions, a scripted origin and test peers.

For tests that open connections and assert on the messages that arrive, the way
Erlang's Common Test, Elixir's ExUnit (``assert_receive``/``refute_receive``) and
Gun's own suite (``gun_test:init_origin``) do:

* ``assert_receive``, ``refute_receive``, ``assert_mailbox_empty``: assertions on
  the calling process's mailbox whose failures show what *is* queued;
* ``gun_up``, ``gun_down``, ``gun_response``, ``gun_data``, ``gun_inform``,
  ``gun_trailers``, ``gun_error``, ``gun_conn_error``, ``gun_upgrade``,
  ``gun_ws``, ``down``, ``has_headers``: patterns that read like Gun's messages;
* ``ScriptedOrigin``: a loopback server (TCP, TLS, Unix) that records every byte
  it receives and plays a script of ``Step``s;
* ``EchoServer``: an in-process HTTP/1.1 + Websocket echo server;
* ``make_tls_pair``/``TLSPair``: a throw-away CA and server certificate (trustme);
* ``GunMailbox``: a fresh mailbox that fails on leftover Gun messages;
* ``timeout_factor``/``scaled``: ``GUNPY_TIMEOUT_FACTOR`` for slow machines.

Installing gunpy also installs a pytest plugin (``gunpy.testing.plugin``, entry
point ``pytest11``) with the fixtures ``gun_mailbox``, ``scripted_origin``,
``gun_http_echo_server``, ``gun_ws_echo_server``, ``tls_pair`` and
``timeout_factor``.  This package never imports pytest itself.
"""

from ._assertions import TIMEOUT_FACTOR_ENV as TIMEOUT_FACTOR_ENV
from ._assertions import assert_mailbox_empty as assert_mailbox_empty
from ._assertions import assert_receive as assert_receive
from ._assertions import down as down
from ._assertions import format_mailbox as format_mailbox
from ._assertions import gun_conn_error as gun_conn_error
from ._assertions import gun_data as gun_data
from ._assertions import gun_down as gun_down
from ._assertions import gun_error as gun_error
from ._assertions import gun_inform as gun_inform
from ._assertions import gun_response as gun_response
from ._assertions import gun_trailers as gun_trailers
from ._assertions import gun_up as gun_up
from ._assertions import gun_upgrade as gun_upgrade
from ._assertions import gun_ws as gun_ws
from ._assertions import has_headers as has_headers
from ._assertions import refute_receive as refute_receive
from ._assertions import scaled as scaled
from ._assertions import timeout_factor as timeout_factor
from ._echo import EchoServer as EchoServer
from ._mailbox import GunMailbox as GunMailbox
from ._mailbox import is_gun_message as is_gun_message
from ._origin import AcceptWs as AcceptWs
from ._origin import Call as Call
from ._origin import Close as Close
from ._origin import Delay as Delay
from ._origin import Expect as Expect
from ._origin import ExpectClosed as ExpectClosed
from ._origin import ExpectRequest as ExpectRequest
from ._origin import ExpectUntil as ExpectUntil
from ._origin import ExpectWs as ExpectWs
from ._origin import HalfClose as HalfClose
from ._origin import OriginConn as OriginConn
from ._origin import OriginFactory as OriginFactory
from ._origin import PauseReading as PauseReading
from ._origin import Request as Request
from ._origin import Reset as Reset
from ._origin import Respond as Respond
from ._origin import ResumeReading as ResumeReading
from ._origin import ScriptedOrigin as ScriptedOrigin
from ._origin import ScriptError as ScriptError
from ._origin import Send as Send
from ._origin import SendWs as SendWs
from ._origin import Step as Step
from ._origin import http_response as http_response
from ._origin import refused_port as refused_port
from ._tls import TLSPair as TLSPair
from ._tls import TrustmeMissing as TrustmeMissing
from ._tls import make_tls_pair as make_tls_pair

__all__ = [
    "TIMEOUT_FACTOR_ENV",
    "AcceptWs",
    "Call",
    "Close",
    "Delay",
    "EchoServer",
    "Expect",
    "ExpectClosed",
    "ExpectRequest",
    "ExpectUntil",
    "ExpectWs",
    "GunMailbox",
    "HalfClose",
    "OriginConn",
    "OriginFactory",
    "PauseReading",
    "Request",
    "Reset",
    "Respond",
    "ResumeReading",
    "ScriptError",
    "ScriptedOrigin",
    "Send",
    "SendWs",
    "Step",
    "TLSPair",
    "TrustmeMissing",
    "assert_mailbox_empty",
    "assert_receive",
    "down",
    "format_mailbox",
    "gun_conn_error",
    "gun_data",
    "gun_down",
    "gun_error",
    "gun_inform",
    "gun_response",
    "gun_trailers",
    "gun_up",
    "gun_upgrade",
    "gun_ws",
    "has_headers",
    "http_response",
    "is_gun_message",
    "make_tls_pair",
    "refused_port",
    "refute_receive",
    "scaled",
    "timeout_factor",
]
