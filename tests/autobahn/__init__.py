"""Autobahn|Testsuite (the Websocket conformance suite) for gunpy's client.

===========================  ===========================================================
``install_autobahn.sh``      autobahntestsuite 25.10.1 into ``.peers/autobahn/venv-py2``
                             (a Python 2.7 virtualenv; idempotent)
``wstest_loopback.py``       ``wstest`` with its servers bound to 127.0.0.1 (Python 2.7)
``fuzzingserver.json``       the fuzzingserver spec (``run_autobahn.py`` fills in url/cases)
``run_autobahn.py``          runs the fuzzingserver and a client command against it
``client.py``                gunpy's client: Gun's ``ws_autobahn_SUITE`` in gunpy
``compare.py``               the report beside Gun 2.4.1's (``gun-2.4.1-autobahn.json``)
===========================  ===========================================================

``make conformance`` runs all 517 cases and writes ``docs/autobahn.md``;
``tests/integration/test_autobahn.py`` (part of ``make test``) runs sections 1-10.
"""
