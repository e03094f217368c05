"""Helpers shared by the test folders, each defined once: forge, core, mounting, treegen."""
