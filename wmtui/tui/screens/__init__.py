"""Modal screens of the playground."""
