"""
Counting a store's calls, for the tests that hold a flow to a number of
store round trips (each call is one hand-off to the store's thread).
"""

from __future__ import annotations

import collections
from typing import Any


def count_store_calls(testcase: Any, store: Any, *names: str) -> "collections.Counter[str]":
    """
    Count the calls of ``store``'s methods ``names`` from now on; the
    methods are patched through ``testcase.patch``, so the test's clean-up
    puts them back.
    """
    counts: collections.Counter = collections.Counter()

    def counting(name, original):
        def call(*args, **kwargs):
            counts[name] += 1
            return original(*args, **kwargs)
        return call

    for name in names:
        testcase.patch(store, name, counting(name, getattr(store, name)))
    return counts
