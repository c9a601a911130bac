"""service-order: checkout and orders; starts the checkout saga and owns the order state machine."""
