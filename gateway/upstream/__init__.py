"""
The upstream half: an ACME v2 (RFC 8555) client on treq, its messages and
typed errors, and what a failure at start-up says about ``--upstream``.
"""
