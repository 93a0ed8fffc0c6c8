"""exports slice: needs and offers as CSV, GeoJSON and HXL-tagged CSV, without contact data."""
