"""Pure domain logic: no I/O, no framework, `now` is always a parameter."""
