"""Track: opens and clicks from our own links, provider events from the webhook, and the numbers they add up to."""
