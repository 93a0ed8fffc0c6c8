"""Errors raised by the geo package."""


class GeoError(Exception):
    """Base of every geo error."""


class InvalidCoordinatesError(GeoError, ValueError):
    """Latitude/longitude outside their ranges, not finite, or of mismatched shapes."""


class GeocodingError(GeoError, LookupError):
    """A place could not be found or the geocoder failed."""


class IndexInputError(GeoError, ValueError):
    """Bad ids, categories or arguments given to a SpatialIndex."""


class UnknownIdError(GeoError, LookupError):
    """An id asked to be removed is not in the index."""


class PlaceNotFoundError(GeocodingError):
    """No settlement matches the query (the service answered, or the gazetteer has no such name)."""


class GeocoderUnavailableError(GeocodingError, ConnectionError):
    """The online geocoder could not be reached or answered with a server error."""


class GeocoderTimeoutError(GeocoderUnavailableError, TimeoutError):
    """The online geocoder did not answer within the timeout."""


class GeocoderQuotaError(GeocodingError, RuntimeError):
    """The online geocoder refused the request: rate limit or quota exceeded."""


class GeocoderServiceError(GeocodingError, RuntimeError):
    """The online geocoder rejected the request or sent an answer we could not read."""
