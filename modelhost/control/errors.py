"""Why an API object was refused: every problem names the field it is about.

KServe's webhooks answer with one message per object; a user fixing a YAML file wants every
mistake at once, each pointing at its field (``spec.predictor.minReplicas``), so the control
plane collects :class:`FieldError` s and raises them together as one :class:`ValidationError`
(a 400, through :class:`modelhost.errors.InvalidInput`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from modelhost.errors import InvalidInput

__all__ = ["FieldError", "ParseError", "RuntimeSelectionError", "ValidationError"]


@dataclass(frozen=True)
class FieldError:
    """One problem: the path of the field (``spec.predictor.model.runtime``) and what is wrong."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


class ValidationError(InvalidInput):
    """An object is invalid; ``errors`` lists every problem found, ``field`` the first one's path.

    ``subject`` names the object (``InferenceService default/iris``) in the message.
    """

    def __init__(self, errors: Sequence[FieldError], subject: str = "") -> None:
        if not errors:
            raise ValueError("ValidationError needs at least one FieldError")
        self.errors: tuple[FieldError, ...] = tuple(errors)
        self.field = self.errors[0].field
        self.subject = subject
        lead = f"{subject} is invalid" if subject else "invalid"
        if len(self.errors) == 1:
            text = f"{lead}: {self.errors[0]}"
        else:
            items = "\n".join(f"  - {error}" for error in self.errors)
            text = f"{lead} ({len(self.errors)} problems):\n{items}"
        super().__init__(text)

    @classmethod
    def single(cls, field: str, message: str, subject: str = "") -> ValidationError:
        return cls([FieldError(field, message)], subject)


class ParseError(ValidationError):
    """A document could not be read as an API object (YAML syntax, unknown kind or field, type)."""


class RuntimeSelectionError(ValidationError):
    """No serving runtime can serve the predictor.

    ``failure_reason`` is KServe's reason for ``status.modelStatus.lastFailureInfo``:
    ``NoSupportingRuntime``, ``RuntimeNotRecognized`` or ``RuntimeDisabled``.
    """

    def __init__(self, field: str, message: str, failure_reason: str, subject: str = "") -> None:
        super().__init__([FieldError(field, message)], subject)
        self.failure_reason = failure_reason
