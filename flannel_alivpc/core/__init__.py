"""Pure types, errors and helpers shared by every layer; no I/O, no external imports."""
