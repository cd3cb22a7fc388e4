"""ADT event notifications: the outbox, subscriptions, forwarding and the dispatcher."""
