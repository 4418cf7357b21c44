"""One exchange for every request: the ``Transport`` protocol and what crosses it.

Creates, polls and image downloads all go through one ``Transport`` (after
httpx's ``_transports/base.py``): send one request, get back an ``Answer``
(status, headers, body) or a ``SendError`` that says whether the request may
have reached the server. Everything above it (what an answer means, whether
to send again) is ``_classify.read``'s.

Implementations:

* ``HTTPTransport`` (``_http.py``): aiohttp, with proxies and ``NO_PROXY``,
  the user agent, timeouts and written-or-not tracking;
* ``MemoryTransport`` (``_memory.py``): hands each request to a simulator's
  request pipeline in the same process, with no socket, so a test can run
  on the fake loop clock. Build a session on it with
  ``gptimage_async.testing.memory_session``.

A request's *target* is a path under the base URL (``"/runs/abc"``) or an
absolute ``http(s)`` URL (an image). The API key is sent only to the base
URL's origin (scheme, host, port), never to any other host.
"""

from __future__ import annotations

from ._http import HTTPTransport, check_proxy
from ._protocol import (
    ACCEPT_JSON,
    MAX_BODY_BYTES,
    MAX_REDIRECTS,
    Answer,
    Secret,
    SendError,
    Transport,
    display_url,
    host_of,
    origin,
)

__all__ = [
    "ACCEPT_JSON",
    "HTTPTransport",
    "MAX_BODY_BYTES",
    "MAX_REDIRECTS",
    "Answer",
    "Secret",
    "SendError",
    "Transport",
    "check_proxy",
    "display_url",
    "host_of",
    "origin",
]
