"""
Gateway-driven validation: the means by which the gateway itself proves
control of a name to the upstream CA when a legacy client cannot (its v1
authorizations are not honoured upstream, its challenge files are already
gone, or the gateway manages the account key).

Each means is a *responder* for one challenge type: ``http-01`` through the
built-in `HTTP01Responder`, ``dns-01`` through an operator hook command or
RFC 2136 dynamic updates.  `gateway.translate.revalidation` drives them.
"""
