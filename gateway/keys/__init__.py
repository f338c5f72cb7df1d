"""
Account keys: JOSE (keys, algorithms, thumbprints, JWS signing), the key
store the operator fills, and the keys managed mode makes.
"""
