"""Tenants: API keys that belong to teams, each team's limits and budget, fair share of a model."""
