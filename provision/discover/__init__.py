"""``provision discover``: from an address to a working inbox file.

``dns`` asks SRV (RFC 6186), MX and address records; ``autoconfig`` fetches the
domain's ``config-v1.1.xml``; ``providers`` maps MX hosts to known providers;
``candidates`` orders what they found (SRV, autoconfig, provider, usual names);
``assess`` looks at each candidate without credentials and judges it with
Rocket.Chat's ``secure`` semantics; ``search`` runs all of it and returns a
:class:`~provision.discover.search.Discovery`; ``inboxfile`` writes the inbox file.

Nothing here is imported by ``provision check``: dnspython costs about 30-100 ms.
"""
