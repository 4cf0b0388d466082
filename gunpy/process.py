"""Erlang processes for Python: mailboxes, selective receive, monitors, timers.

The public face of ``gunpy._process`` (see its module docstring for the theory of
operation).  Everything here is also re-exported from ``gunpy``; ``gunpy.flush``
is Gun's ``flush`` and also takes these patterns.
"""

from ._process import ANY as ANY
from ._process import TIMEOUT as TIMEOUT
from ._process import ActorRefPid as ActorRefPid
from ._process import FunPid as FunPid
from ._process import Mailbox as Mailbox
from ._process import OwnerActor as OwnerActor
from ._process import Pid as Pid
from ._process import Ref as Ref
from ._process import as_pid as as_pid
from ._process import cancel_timer as cancel_timer
from ._process import demonitor as demonitor
from ._process import flush_messages as flush
from ._process import is_alive as is_alive
from ._process import make_ref as make_ref
from ._process import match as match
from ._process import monitor as monitor
from ._process import receive as receive
from ._process import select as select
from ._process import self as self
from ._process import send_after as send_after
from .exceptions import Exit as Exit

__all__ = [
    "ANY",
    "TIMEOUT",
    "ActorRefPid",
    "Exit",
    "FunPid",
    "Mailbox",
    "OwnerActor",
    "Pid",
    "Ref",
    "as_pid",
    "cancel_timer",
    "demonitor",
    "flush",
    "is_alive",
    "make_ref",
    "match",
    "monitor",
    "receive",
    "select",
    "self",
    "send_after",
]
