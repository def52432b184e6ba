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


def wait_in_words(seconds: int) -> str:
    """`42 seconds`, `15 minutes`, `3 hours`: a wait rounded up, never shorter than it is."""
    seconds = max(1, seconds)
    for unit, size in (("hour", 3600), ("minute", 60)):
        if seconds >= size * 1.5 or (seconds % size == 0 and seconds >= size):
            count = -(-seconds // size)
            return f"{count} {unit}{'' if count == 1 else 's'}"
    return f"{seconds} second{'' if seconds == 1 else 's'}"


class TooMany(DomainError):
    """Rate limited; `retry_after` seconds (at least one) until it may be tried again. The
    `reason` becomes the sentence with the wait: "Too many codes tried; try again in 4
    minutes." (the same number of seconds as the API's `Retry-After`)."""

    def __init__(self, code: str, reason: str, *, retry_after: int) -> None:
        self.retry_after = max(1, retry_after)
        super().__init__(code, f"{reason}; try again in {wait_in_words(self.retry_after)}.")
        self.reason = reason
