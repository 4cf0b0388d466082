"""Reliability: faults in every state, hostile servers, fuzzing, leaks and the soak.

See docs/guide/failures.md for the table these tests are the source of truth for.
"""
