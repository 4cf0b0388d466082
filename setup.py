"""Only the optional C extension lives here; the metadata is in setup.cfg.

``gunpy._speedups`` (Websocket masking, RFC 6455 5.3) is built when a C compiler
and the Python headers are present.  ``optional=True``: when the build fails,
setuptools warns and installs gunpy without it, and gunpy uses its pure-Python
masker (docs/performance.md, "The C masker").
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("gunpy._speedups", sources=["gunpy/_speedups.c"], optional=True),
    ],
)
