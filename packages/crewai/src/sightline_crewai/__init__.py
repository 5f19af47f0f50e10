"""Sightline integration."""
