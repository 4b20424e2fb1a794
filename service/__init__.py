"""Everything a person or a program can do with memorag, as plain functions.

The command line (``manage.py``) and the HTTP API are faces over these: they
parse, call, and render; no rule lives only in a face. Functions take and
return plain values and raise ``ServiceError`` subclasses whose message is
meant for the person who asked. Below: ``store/`` (rows, memories, vectors)
and ``workers.tasks`` (where work is sent); the model is never loaded here.
"""

from service.errors import Conflict, Invalid, NotFound, NotSent, NoWorker, ServiceError, TooMany

__all__ = ["Conflict", "Invalid", "NoWorker", "NotFound", "NotSent", "ServiceError", "TooMany"]
