"""`digest demo`: a throwaway store filled with demo data, one issue sent to the local outbox, a week of reading."""
