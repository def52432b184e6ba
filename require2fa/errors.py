"""Domain errors: a use case refuses with a stable `code` and a `detail` sentence for people.

The kind of refusal is the class; each adapter maps the classes once (the API to HTTP statuses
in `api.errors`, the pages to error pages in `api.pages.base`, the CLI to a one-line failure).
Nothing here knows about HTTP.
"""

from __future__ import annotations


class DomainError(Exception):
    """A refusal. `code` is for programs (e.g. `owners-only`), `detail` for people; `field`
    names the input it is about, when it is about one, and `summary` is then the sentence
    about the request as a whole (by default, that it is invalid)."""

    def __init__(
        self, code: str, detail: str, *, field: str | None = None, summary: str | None = None
    ) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.field = field
        self.summary = summary


class Invalid(DomainError):
    """The request cannot be carried out as asked (a rule of the product forbids it)."""


class NotSignedIn(DomainError):
    """Only a signed-in person can do this."""


class NotAllowed(DomainError):
    """The actor may not do this (their role, or their own missing second factor)."""


class NotFound(DomainError):
    """The thing does not exist, or is not visible to the actor."""


class Conflict(DomainError):
    """The current state forbids it (already joined, already taken)."""


class Gone(DomainError):
    """It existed but has expired (an invitation past its window)."""


class Unavailable(DomainError):
    """A service it depends on (the SMS gateway) failed; trying later may work."""


class TooMany(DomainError):
    """Rate limited; `retry_after` seconds until it may be tried again."""

    def __init__(self, code: str, detail: str, *, retry_after: int) -> None:
        super().__init__(code, detail)
        self.retry_after = retry_after
