"""The one exception type users see for bad input."""


class InputError(ValueError):
    """Bad input: a file, molecule, key or option at fault.

    The message is one line and names what is wrong; the CLI prints it and exits with 2.
    """
