"""Optuna storages from one string: an SQLAlchemy URL, or a journal file path (the default)."""
import re


def make_storage(spec: str):
    """`sqlite:///x.db`, `postgresql+psycopg2://user@host/db`, `mysql+pymysql://...` -> RDBStorage (SQLite for
    one process, a server for many workers); anything else is a journal file, safe for many processes on
    one machine or a shared file system."""
    import optuna
    if re.match(r"^[a-z][a-z0-9+]*://", spec):
        return optuna.storages.RDBStorage(spec)
    from optuna.storages.journal import JournalFileBackend
    return optuna.storages.JournalStorage(JournalFileBackend(spec))
