"""Source data: the trips schema and the local sample generator."""
