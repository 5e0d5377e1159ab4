"""The editor's desk: previews, dry runs and test sends of an issue before it goes out."""
