"""Readers' votes from the email (issue 17): casting one, the voter's pseudonym, and the way votes reach the site."""
