"""The error tree.

Every error this library raises or resolves a run with is a ``GPTImageError``::

    GPTImageError
    ├── InvalidRequestError (ValueError)      bad input, raised before any request is sent
    ├── ConfigurationError (ValueError)       bad arguments to Session, RateLimit, Batch, download
    ├── SessionClosedError (RuntimeError)     the session is closed (or closed under the run);
    │                                         a Session or Batch used a second time
    ├── WrongEventLoopError (RuntimeError)    a Session used from an event loop it was not opened in
    ├── PromptFileError (ValueError)          a prompt file cannot be read, or has a bad row
    ├── JournalError                          a journal is held by another process, or damaged
    ├── ManifestError (ValueError)            a manifest.jsonl line cannot be read back
    ├── DownloadError                         an image could not be saved
    ├── DiskSpaceError (OSError)              too little free space for a batch, or none left
    ├── APIConnectionError                    the request never got an HTTP answer
    │   └── TLSCertificateError               the server's certificate failed verification
    ├── ProtocolError                         an answer that cannot be understood
    │   └── RunIdMismatchError                a poll answered about another run
    ├── UncertainCreateError                  a create may have reached the server: not resent
    ├── RunFailedError                        the provider says the run failed
    ├── RunTimeoutError (TimeoutError)        the run did not finish within run_timeout
    └── APIStatusError                        the provider answered with an error status
        ├── BadRequestError                   400
        ├── AuthenticationError               401
        ├── InsufficientCreditsError          402
        ├── PermissionDeniedError             403
        ├── RunNotFoundError                  404
        ├── EndpointNotFoundError             404 on a create: check the base URL
        ├── RateLimitError                    429 (transient; retried by the library)
        │   └── QuotaExceededError            429 USAGE_EXCEEDED: the key's quota is gone
        └── ServerError                       5xx

A session over several lanes (keys, sellers) adds::

    GPTImageError
    ├── PoolExhaustedError                    every lane of the pool is closed; ``causes``
    │                                         holds each lane's closing error
    └── SpendCapError                         a create could take the spend past the cap

Errors carry what a caller needs (``status_code``, ``code``, ``run_id``,
``retry_after``) and never the API key.
"""

from __future__ import annotations

from ._secrets import redact

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "AuthenticationError",
    "BadRequestError",
    "ConfigurationError",
    "DiskSpaceError",
    "DownloadError",
    "EndpointNotFoundError",
    "GPTImageError",
    "InsufficientCreditsError",
    "InvalidRequestError",
    "JournalError",
    "ManifestError",
    "PermissionDeniedError",
    "PoolExhaustedError",
    "PromptFileError",
    "ProtocolError",
    "QuotaExceededError",
    "RateLimitError",
    "RunFailedError",
    "RunIdMismatchError",
    "RunNotFoundError",
    "RunTimeoutError",
    "ServerError",
    "SessionClosedError",
    "SpendCapError",
    "TLSCertificateError",
    "UncertainCreateError",
    "WrongEventLoopError",
    "status_error",
]


class GPTImageError(Exception):
    """Base class of every error raised by gptimage-async."""

    run_id: str | None = None
    #: Attributes whose values a message shows as they are (ids a caller needs).
    _ids: tuple[str, ...] = ("run_id",)

    def __init__(self, message: str, *, run_id: str | None = None) -> None:
        # A key passed in the wrong place (``Session(proxy=key)``, ``base_url="ftp://KEY"``,
        # a pool file's ``key_env = "KEY"``) never comes back in a message or a repr: keys
        # end up in CI logs and bug reports. Every message goes through ``redact`` here,
        # so a check that repeats the value it refuses needs no care of its own.
        self.run_id = run_id
        if isinstance(message, str):
            message = redact(message, keep=(getattr(self, name, None) for name in self._ids))
        super().__init__(message)
        self.message = message


class InvalidRequestError(GPTImageError, ValueError):
    """The request failed client-side validation; nothing was sent.

    ``field`` names the offending input (``"prompt"``, ``"aspect_ratio"``, ...).
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class ConfigurationError(GPTImageError, ValueError):
    """A bad argument to the library's own objects, found before anything was sent.

    ``Session`` (no API key, unknown provider, unsafe URL, a timeout that is
    not a positive number of seconds), ``RateLimit``, ``Batch``, ``download``.
    Bad *request* input (a prompt, an aspect ratio) is ``InvalidRequestError``.
    """


class SessionClosedError(GPTImageError, RuntimeError):
    """The session is closed, or was closed before this run was resolved.

    Also raised when a ``Session`` is opened, or a ``Batch`` run, a second
    time: both run once (create a new one).

    A run that ends with this error may still finish on the provider's side;
    its ``run_id`` lets a later session ``attach`` to it.
    """


class WrongEventLoopError(GPTImageError, RuntimeError):
    """A ``Session`` was used from an event loop other than the one it was opened in.

    A session's connections, limiter and poller belong to the loop that ran
    ``open()`` (asyncio objects cannot move between loops). Raised at the
    first call from another loop, before any request is sent; open one
    session per loop (per thread, per ``asyncio.run``) instead.
    """


class PromptFileError(GPTImageError, ValueError):
    """A prompt file cannot be read or has a bad row; ``path`` and ``line`` say where.

    ``str(error)`` reads ``prompts.csv:12: quality must be 'medium' or 'high', not 'hi'``.
    """

    def __init__(self, message: str, *, path: str, line: int | None = None) -> None:
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {message}")
        self.path = path
        self.line = line
        self.reason = message


class JournalError(GPTImageError):
    """The journal cannot be used: another process holds it, or a line is damaged."""


class ManifestError(GPTImageError, ValueError):
    """A ``manifest.jsonl`` line is not a manifest entry; ``path`` and ``line`` say where.

    ``line`` counts from 1 in the file; ``reason`` is what is wrong with it
    (not JSON, a field of the wrong type ...). ``str(error)`` reads
    ``out/manifest.jsonl:3: JSON is malformed: ...``.
    """

    def __init__(self, message: str, *, path: str, line: int) -> None:
        super().__init__(f"{path}:{line}: {message}")
        self.path = path
        self.line = line
        self.reason = message


class DownloadError(GPTImageError):
    """An image could not be saved: HTTP error, not an image, too large, or the disk refused it.

    ``url`` is the image's URL (``None`` for a problem with the destination);
    ``status_code`` the HTTP status when there was one.
    """

    def __init__(
        self, message: str, *, url: str | None = None, status_code: int | None = None
    ) -> None:
        super().__init__(message)
        self.url = url
        self.status_code = status_code


class APIConnectionError(GPTImageError):
    """The request did not get an HTTP answer (refused, reset, timed out)."""


class ProtocolError(GPTImageError):
    """The provider's answer could not be understood.

    Raised for bodies that are not JSON or not the documented shape, and for a
    run reported as succeeded without any image URL.
    """

    def __init__(
        self, message: str, *, run_id: str | None = None, status_code: int | None = None
    ) -> None:
        super().__init__(message, run_id=run_id)
        self.status_code = status_code


class RunIdMismatchError(ProtocolError):
    """A poll of one run was answered with another run's object, again and again.

    Such an answer is never used as this run's result (it would be another
    user's picture): the poll is retried a few times, then the run fails with
    this error. ``run_id`` is the run asked about, ``answered_id`` the id the
    answer carried.
    """

    _ids = ("run_id", "answered_id")

    def __init__(self, message: str, *, run_id: str, answered_id: str) -> None:
        self.answered_id = answered_id  # before the message is redacted: both ids are kept
        super().__init__(message, run_id=run_id)


class UncertainCreateError(GPTImageError):
    """A create request may have reached the provider, so it was not resent.

    Providers charge when a run is created. When a create fails in a way that
    leaves its fate unknown (a timeout after the request was sent, a connection
    reset after it was written, a bare 500), resending it could pay twice. The
    library reports it instead. Check the provider's dashboard, or construct
    the session with ``resend_uncertain_creates=True`` to accept the risk.

    ``lane`` is the lane it was sent through (``"provider:fingerprint"``, as
    ``Run.lane`` names it; ``None`` when not known); ``sent_at`` when it went
    on the wire (wall-clock UNIX seconds; ``None`` when not known).
    """

    def __init__(
        self,
        message: str,
        *,
        prompt: str,
        lane: str | None = None,
        sent_at: float | None = None,
    ) -> None:
        super().__init__(message)
        self.prompt = prompt
        self.lane = lane
        self.sent_at = sent_at


class RunFailedError(GPTImageError):
    """The provider reports that the run failed (its cost is usually refunded)."""

    def __init__(self, message: str, *, run_id: str, code: str | None = None) -> None:
        super().__init__(message, run_id=run_id)
        self.code = code


class RunTimeoutError(GPTImageError, TimeoutError):
    """The run was not resolved within the session's ``run_timeout``.

    The run may still finish on the provider's side; ``attach`` it to keep
    waiting.
    """


class APIStatusError(GPTImageError):
    """The provider answered with an error status.

    ``status_code`` is the HTTP status (or, for API in One's HTTP-200 envelope,
    the envelope's ``code``); ``code`` is the provider's error code when it
    gave one (``"invalid_input"``, ``"USAGE_EXCEEDED"``, ...).
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        code: str | None = None,
        run_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, run_id=run_id)
        self.status_code = status_code
        self.code = code
        self.retry_after = retry_after

    def __str__(self) -> str:
        code = f" {self.code}" if self.code else ""
        return f"{self.status_code}{code}: {self.message}"


class BadRequestError(APIStatusError):
    """400: missing or malformed parameters."""


class AuthenticationError(APIStatusError):
    """401: the API key is missing or invalid."""


class InsufficientCreditsError(APIStatusError):
    """402: the account has not enough credits."""


class PermissionDeniedError(APIStatusError):
    """403: the IP is not allowed, or the key's spend limit is reached."""


class RunNotFoundError(APIStatusError):
    """404: the provider does not know this run id."""


class RateLimitError(APIStatusError):
    """429: rate limited. The library waits and retries these itself."""


class QuotaExceededError(RateLimitError):
    """429 ``USAGE_EXCEEDED``: the key's quota is spent. Retrying cannot help."""


class ServerError(APIStatusError):
    """5xx: the provider failed internally."""


_BY_STATUS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    402: InsufficientCreditsError,
    403: PermissionDeniedError,
    404: RunNotFoundError,
    429: RateLimitError,
}

# Codes that turn a 429 into a hard error: the quota is gone, waiting cannot help.
_QUOTA_CODES = frozenset({"usage_exceeded", "quota_exceeded", "insufficient_quota"})


def status_error(
    status_code: int,
    message: str,
    *,
    code: str | None = None,
    run_id: str | None = None,
    retry_after: float | None = None,
) -> APIStatusError:
    """Build the ``APIStatusError`` subclass that fits an error answer."""
    cls: type[APIStatusError]
    if status_code == 429 and code is not None and code.lower() in _QUOTA_CODES:
        cls = QuotaExceededError
    elif status_code >= 500:
        cls = ServerError
    else:
        cls = _BY_STATUS.get(status_code, APIStatusError)
    return cls(message, status_code=status_code, code=code, run_id=run_id, retry_after=retry_after)


class DiskSpaceError(GPTImageError, OSError):
    """The output directory has too little free space for a job, or ran out during it.

    Raised by ``Batch.run`` before anything is sent when the free space is below
    the job's estimate (``needed`` and ``free`` in bytes; ``expected_image_bytes``
    tunes or disables the check). A disk that fills up during a batch stops it
    instead (no more creates); a rerun resumes once there is room.
    """

    def __init__(self, message: str, *, needed: int = 0, free: int = 0) -> None:
        super().__init__(message)
        self.needed = needed
        self.free = free


# -- a pool of lanes (several keys and sellers) ---------------------------------------------


class PoolExhaustedError(GPTImageError):
    """No lane of a pool can take a create: it was not created.

    A lane closes on 401, 402, 403 or a 429 ``USAGE_EXCEEDED`` (its key is
    bad, out of credits, denied or out of quota); it is unreachable while it
    cools after connection failures in a row; and a create never goes back to
    a lane it already failed on. ``causes`` holds, per lane, its display label
    and its typed error, in pool order; ``why`` says, per lane, which it was:
    ``"closed"``, ``"unreachable"``, ``"failed this create"`` or
    ``"refuses this request"`` (its provider's rule, checked before sending). The message
    names each lane and error, never a key. A pool of one lane raises that
    lane's own error instead (as a single-key session always has).
    """

    def __init__(
        self, causes: tuple[tuple[str, GPTImageError], ...], *, why: tuple[str, ...] = ()
    ) -> None:
        why = why or ("closed",) * len(causes)
        closed = set(why) == {"closed"}
        parts = "; ".join(
            f"{label}{'' if closed else f' ({state})'}: {type(err).__name__} {err}"
            for (label, err), state in zip(causes, why, strict=True)
        )
        head = "every lane of the pool is closed" if closed else "no lane of the pool can take it"
        super().__init__(f"{head} ({parts})")
        self.causes = causes
        self.why = why


class SpendCapError(GPTImageError):
    """A create was not sent: at its lane's price it could take the spend past the cap.

    ``cap`` is the session's ``spend_cap``, ``committed`` what created runs
    cost so far, ``reserved`` what creates in flight (or of uncertain fate)
    may still cost, and ``price`` what this create would have cost, all in
    the lanes' price unit (credits, cents: the user's choice). Nothing was
    sent and nothing was paid for this create.
    """

    def __init__(
        self, message: str, *, cap: float, committed: float, reserved: float, price: float
    ) -> None:
        super().__init__(message)
        self.cap = cap
        self.committed = committed
        self.reserved = reserved
        self.price = price


class TLSCertificateError(APIConnectionError):
    """The server's TLS certificate failed verification: never retried.

    ``host`` is the host whose certificate was refused. Sending again cannot
    help (the certificate will not change in a second); fix the trust store
    (``SSL_CERT_FILE``), the base URL, or the proxy that intercepts TLS.
    """

    def __init__(self, message: str, *, host: str) -> None:
        super().__init__(message)
        self.host = host


class EndpointNotFoundError(APIStatusError):
    """404 on a create: the endpoint does not exist, so the base URL is likely wrong.

    Never retried. The message names the URL (without credentials or query).
    """


# Tracebacks and reprs name the public path (gptimage_async.ConfigurationError), not
# this private module; pickle finds the classes there too, since the package exports them.
for _name in __all__:
    _cls = globals()[_name]
    if isinstance(_cls, type):
        _cls.__module__ = "gptimage_async"
del _name, _cls
