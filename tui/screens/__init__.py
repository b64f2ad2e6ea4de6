"""The dashboard's pages, one per tab."""
