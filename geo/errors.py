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
