"""Cookiecutter hooks; a package only so tests can import the pure helpers in each hook file."""
