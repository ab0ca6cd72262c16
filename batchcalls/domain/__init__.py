"""The pure core: a call's life, its rules and the shapes users see. No I/O here."""
