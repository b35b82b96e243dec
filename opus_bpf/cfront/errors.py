"""The one exception the C front end raises, so callers can map it to a one-line message."""


class CFrontError(Exception):
    """Preprocessing or parsing a translation unit failed; ``message`` is one line."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
