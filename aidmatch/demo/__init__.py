"""Demo scenario: a 2010-style wildfire emergency, generated and seeded."""
