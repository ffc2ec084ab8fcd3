"""The one exception type the CLI turns into a single line on stderr and a non-zero exit."""


class UserError(Exception):
    """A problem the user can fix: bad input, bad config, missing file.

    The message must say what is wrong, where (file, line, field) and, where possible, how to fix it.
    """
