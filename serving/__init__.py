"""Serving stage: the decision engine and the invoice offer API."""
