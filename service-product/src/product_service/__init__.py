"""service-product: the catalogue and its stock, served over gRPC with a Redis read cache."""
