"""Shared foundations: settings, the input contract and tables, validation, the catalog, plan fit,
calendar helpers, atomic writes and database URLs. Imports no other package of the project."""
