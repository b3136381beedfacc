"""The one exception for user mistakes: every CLI prints its message and exits with status 2."""


class UsageError(ValueError):
    """Bad input from the user (unknown name, unreadable file, infeasible budget, ...); the message says
    what was wrong and what is accepted."""
