"""The embedded default: real local mail servers on 127.0.0.1 with a throw-away CA.

Used by ``provision sandbox`` / ``provision check --sandbox`` and by the tests.
Needs the ``sandbox`` extra (aiosmtpd, pymap, trustme, uvicorn).
"""
