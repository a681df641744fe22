"""vision service of Watus (see the README; being built)."""
