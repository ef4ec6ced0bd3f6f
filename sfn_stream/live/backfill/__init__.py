"""Backfill: run the analyses over runs already stored in Tiled and add the derived stream and the
``stop['sfn']`` summary to each stored run in place."""
