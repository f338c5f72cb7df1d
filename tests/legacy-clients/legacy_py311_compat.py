"""
Python 3.11 compatibility for legacy ACME clients' own code, installed by
scripts/setup (with a ``.pth`` line that imports it) only into the matrix
venvs whose requirements file says ``# setup: collections-aliases``.

certbot 0.x and acme 0.x were written for Python 2.7 and 3.4-3.8 and
subclass ``collections.Mapping``, ``collections.Hashable`` and friends in
their own modules; Python 3.10 removed those aliases of
``collections.abc``.  No dependency pin can change a client's own source,
so the aliases are put back, and nothing else: the client's wire behaviour
is untouched.  (On the machines that run these releases -- Debian buster's
Python 3.7, Ubuntu focal's 3.8 -- the aliases still exist.)
"""

import collections
import collections.abc

for _name in ("Callable", "Hashable", "Iterable", "Iterator", "Mapping", "MutableMapping",
              "MutableSequence", "MutableSet", "Sequence", "Set"):
    if not hasattr(collections, _name):
        setattr(collections, _name, getattr(collections.abc, _name))
