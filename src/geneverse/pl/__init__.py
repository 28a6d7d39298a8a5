"""Plotting: ``gv.pl``."""
