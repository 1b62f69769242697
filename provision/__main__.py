"""``python -m provision``."""

from provision.entry import main

main()
