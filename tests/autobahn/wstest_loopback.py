# Python 2.7 ONLY.  Run as:  .peers/autobahn/venv-py2/bin/python wstest_loopback.py <wstest args>
# Same as `wstest`, but the fuzzingserver / echoserver listen on 127.0.0.1 only
# (stock wstest binds 0.0.0.0 and offers no option for the interface).
import autobahn.twisted.websocket as _atw
from autobahntestsuite import echo, fuzzing, wstest

_orig = _atw.listenWS


def _listen_loopback(factory, contextFactory=None, backlog=50, interface="127.0.0.1"):
    return _orig(factory, contextFactory, backlog, interface or "127.0.0.1")


fuzzing.listenWS = _listen_loopback
if hasattr(echo, "listenWS"):
    echo.listenWS = _listen_loopback
wstest.run()
