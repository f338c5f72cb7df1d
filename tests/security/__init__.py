"""
Security tests: the v1 port against a hostile client (issue: the gateway
must never be tricked into signing with a key whose possession was not
proved).
"""
