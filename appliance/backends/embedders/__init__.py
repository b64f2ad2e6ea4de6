"""Text embedders: turn texts into unit-length vectors."""
