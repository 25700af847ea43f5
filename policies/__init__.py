"""Shipped policy presets, installed as the package ``appliance._presets``."""
