"""SMTP and IMAP probes that mirror how Rocket.Chat itself uses an inbox's settings."""
