"""User-facing errors of the harness (shown as one line by the CLI)."""


class UserError(ValueError):
    """Bad input the user can fix; the message says how."""
