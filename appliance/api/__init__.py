"""HTTP controllers: decode a struct, call a service, encode a struct."""
