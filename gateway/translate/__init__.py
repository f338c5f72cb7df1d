"""
Translation: one validated request value per v1 request
(`gateway.translate.requests`), one flow per value (registration,
authorizations, issuance, revocation), the domain rules they apply
(identifier policy, CSRs, the rate-limit budget, revalidation, recovery) and
the domain exceptions they raise.  Knows nothing of the v1 wire.
"""
