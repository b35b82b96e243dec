"""Build errors carry one line: what is wrong and what to do."""


class BuildError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
