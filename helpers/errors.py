"""The one exception family users see: a one-line message, never a deep traceback."""


class HelpersError(Exception):
    """A problem the user can fix; its message is one line naming file, entry and key."""


class DataError(HelpersError):
    """A data root, annotation file or image is missing or malformed."""


class ConfigError(HelpersError):
    """An experiment config or override is unknown, malformed or unsupported by the engine."""


class SubmissionError(HelpersError):
    """A results / submission file does not match the grader's format."""


class EngineError(HelpersError):
    """An engine is unavailable, or training / prediction cannot go on (NaN loss, missing weights)."""


class WriteError(HelpersError):
    """A file cannot be written (disk full, permission denied, a folder in the way); nothing partial is left."""
