"""Errors a user can fix (bad data, a bad config value, missing weights).

The CLI prints these as one line instead of a stack trace; anything else is a bug and keeps its traceback.
"""


class ProjectError(Exception):
    """A problem with the user's inputs, reported as one line naming the file, row or config key."""


class DataError(ProjectError):
    """A data folder or file is missing, empty or unreadable."""


class PretrainedWeightsError(ProjectError):
    """Pretrained weights could not be loaded from the hub or from `pretrained_file`."""
