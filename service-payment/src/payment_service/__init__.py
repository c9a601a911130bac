"""service-payment: the payments of the checkout saga, charged through a payment provider."""
