"""Callbacks the Trainer runs: progress output, prediction writing."""
