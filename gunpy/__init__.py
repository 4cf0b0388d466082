"""gunpy: Gun, the Erlang HTTP/1.1 and Websocket client, for Python.

``import gunpy`` is Erlang's module ``gun``: the same functions with the same
arguments, messages as Gun's tuples delivered to the caller's mailbox, read with
a selective ``receive``.  ``gunpy.process`` holds the Erlang process primitives
(also re-exported here).
"""

from . import cookies as cookies
from ._api import StreamRef as StreamRef
from ._api import await_ as await_
from ._api import await_body as await_body
from ._api import await_up as await_up
from ._api import cancel as cancel
from ._api import close as close
from ._api import connect as connect
from ._api import data as data
from ._api import delete as delete
from ._api import flush as flush
from ._api import get as get
from ._api import head as head
from ._api import headers as headers
from ._api import info as info
from ._api import open as open  # noqa: A004
from ._api import open_unix as open_unix
from ._api import options as options
from ._api import patch as patch
from ._api import ping as ping
from ._api import post as post
from ._api import put as put
from ._api import request as request
from ._api import set_owner as set_owner
from ._api import shutdown as shutdown
from ._api import stream_info as stream_info
from ._api import update_flow as update_flow
from ._api import ws_send as ws_send
from ._api import ws_upgrade as ws_upgrade
from ._process import ANY as ANY
from ._process import TIMEOUT as TIMEOUT
from ._process import Mailbox as Mailbox
from ._process import OwnerActor as OwnerActor
from ._process import Pid as Pid
from ._process import Ref as Ref
from ._process import cancel_timer as cancel_timer
from ._process import demonitor as demonitor
from ._process import make_ref as make_ref
from ._process import monitor as monitor
from ._process import receive as receive
from ._process import select as select
from ._process import self as self
from ._process import send_after as send_after
from .exceptions import Exit as Exit
from .exceptions import GunpyError as GunpyError
from .exceptions import InvalidRequestHeader as InvalidRequestHeader
from .exceptions import NoProc as NoProc
from .exceptions import OptionsError as OptionsError

__version__ = "0.1.0"

__all__ = [
    "ANY",
    "TIMEOUT",
    "Exit",
    "GunpyError",
    "InvalidRequestHeader",
    "Mailbox",
    "NoProc",
    "OptionsError",
    "OwnerActor",
    "Pid",
    "Ref",
    "StreamRef",
    "await_",
    "await_body",
    "await_up",
    "cancel",
    "cancel_timer",
    "close",
    "connect",
    "data",
    "delete",
    "demonitor",
    "flush",
    "get",
    "head",
    "headers",
    "info",
    "make_ref",
    "monitor",
    "open",
    "open_unix",
    "options",
    "patch",
    "ping",
    "post",
    "put",
    "receive",
    "select",
    "self",
    "send_after",
    "set_owner",
    "shutdown",
    "stream_info",
    "update_flow",
    "ws_send",
    "ws_upgrade",
]
