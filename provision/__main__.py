"""``python -m provision``."""

from provision.entry import console

console()
