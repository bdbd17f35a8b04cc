"""The project's own exceptions: every error a user can cause is one of these.

Pages show ``str(err)`` with ``st.error``; the CLI prints it as one line and exits 2.
Messages name the file or field at fault and say what to do.
"""


class WorkbenchError(Exception):
    """Base class for errors a user can cause (bad path, bad file, bad config...)."""


class DatasetError(WorkbenchError):
    """A dataset root or manifest that cannot be used."""


class ImageError(WorkbenchError):
    """An image that cannot be read. ``kind`` is a short machine-readable reason."""

    def __init__(self, path, kind: str, message: str):
        super().__init__(f"{path}: {message}")
        self.path = str(path)
        self.kind = kind
        self.message = message


class SpecError(WorkbenchError):
    """An invalid transform spec (unknown op, unknown parameter, value out of range)."""


class ConfigError(WorkbenchError):
    """An invalid training or prediction config field."""


class CheckpointError(WorkbenchError):
    """A checkpoint that cannot be loaded or does not match the model/task."""


class RunError(WorkbenchError):
    """A run folder that is missing, busy, or in the wrong state for the action."""


class SubmissionError(WorkbenchError):
    """A submission that cannot be produced or does not validate."""


class ArchiveError(WorkbenchError):
    """An uploaded archive refused by the extraction limits or safety checks."""


class UnsafePathError(WorkbenchError):
    """A path that would leave the folder it must stay inside."""


class JobCancelled(Exception):  # noqa: N818 - a signal, not an error a user causes
    """Raised by a job's work when it stops because a cancel was asked for (after saving a checkpoint).

    It lives here, beside the errors, so the training loop and the job runner both use it without
    importing each other."""
