"""Send: lease pending deliveries in batches, hand them to the transport, record the outcome, exactly once."""
