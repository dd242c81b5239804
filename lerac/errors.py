"""Errors the suite reports as one clear line instead of a traceback."""


class LeRaCError(Exception):
    """A problem the user can fix; its message names the problem and the fix."""


class ConfigError(LeRaCError, ValueError):
    """A configuration value that cannot work."""


class DataNotFoundError(LeRaCError, FileNotFoundError):
    """A data set is missing from disk."""
