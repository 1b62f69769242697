"""The commands as library calls: check, set, export, schema, discover, audit. Each returns
data, never prints.

Submodules are imported by what uses them; this package imports nothing, so that
``provision check`` loads only its own command.
"""
