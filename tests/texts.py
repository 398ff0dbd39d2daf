"""Texts several test folders score: one document with every kind of evidence, and a neutral filler."""

RICH_TEXT = ("Experiments by the author (Smith et al., 2001) [1] confirm the measurement. "
             "Experts agree, and the WHO states it is widely accepted. See https://www.nih.gov/x and "
             "doi:10.1000/xyz123.\n\n## References\n1. Smith J, Doe K (2001) A title. Nature 405, 12\n")
FILLER = " The account below was set down plainly for the reader. "
