"""Widgets and dialogs shared by the pages."""
