"""Vector indexes: one vector per catalog item, searched by similarity under metadata filters."""
