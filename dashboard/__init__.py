"""Dashboards business owners review: a region's (and the centre's) state on one server-rendered page.

Aggregates only — never a row, an entity id or a prediction of a person — behind the same roles as
every other door of the product: a bearer token whose credential holds ``audit`` for the region.
"""
