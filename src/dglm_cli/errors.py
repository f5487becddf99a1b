"""Errors a user can cause. The CLI prints their message as one line and exits non-zero."""


class DGLMError(Exception):
    """Base class: the message says what went wrong and, where possible, what to do."""

    exit_code = 1


class InputError(DGLMError):
    """Malformed or inconsistent user input (files, flags, attribute names)."""

    exit_code = 2


class BundleError(DGLMError):
    """A bundle that is missing, corrupt, of a newer format, or inconsistent."""

    exit_code = 3


class AssetError(DGLMError):
    """A model or data asset that is missing locally and cannot be fetched."""

    exit_code = 4
