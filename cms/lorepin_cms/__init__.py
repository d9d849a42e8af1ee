"""LorePin CMS: lore stories pinned to places, served as a JSON API."""
