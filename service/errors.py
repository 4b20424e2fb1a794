"""What the service refuses, and why, in words a user can act on."""


class ServiceError(Exception):
    """A request the service cannot carry out; the message says why and, where it can, what to do."""


class NotFound(ServiceError):
    """No knowledge base, document, query or adapter by that name or id."""


class Conflict(ServiceError):
    """It exists already, or is in a state that forbids the request."""


class Invalid(ServiceError):
    """The request itself is malformed: an empty question, a bad name or id."""


class NoWorker(ServiceError):
    """No worker serves the queue the request needs."""


class TooMany(ServiceError):
    """More at once than a limit allows (a batch over ``MEMORAG_MAX_BATCH``): refused whole."""


class NotSent(ServiceError):
    """The work is saved but its message could not reach the queue (the store went down between the check and
    the send); the reconciler sends it again once the store answers, so nothing is lost."""
