"""A small service wired the way a user would wire it (see ``app.py``)."""
