"""Feature stage: the input contract, feature tables and the Feast repository."""
