"""Analyses of committed results: the seed papers' claims with paired 95 % intervals (``claims``, ``paired``)
and the output rules every study follows (``outputs``). Run from a checkout; not installed."""
