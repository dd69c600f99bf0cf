"""User-facing errors: the CLI prints them as one line and exits with code 2."""


class UserError(Exception):
    """A problem with what the user asked for (bad flag, bad file), with the fix in the message."""
