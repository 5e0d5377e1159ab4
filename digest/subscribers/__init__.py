"""Subscribers: their lifecycle (subscribe, confirm, pause, unsubscribe, forget) and the mail that confirms a signup."""
