"""
The ACME v2 face at ``/v2/directory``, for draft-era v2 clients (2018-2019)
and current ones: the resource tree, the wrapper every v2 request crosses
(nonces, request ids, problem documents, logs, the report), JWS
verification with ``jwk`` or ``kid``, v2 messages and problems.  It shares
the v1 face's listener, nonces and JWS checks.
"""
