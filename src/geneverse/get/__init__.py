"""Getters: ``gv.get``."""
