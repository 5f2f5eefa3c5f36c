"""Optuna storages from one string: an SQLAlchemy URL, or a journal file path (the default)."""
import random
import re
import time


def make_storage(spec: str):
    """`sqlite:///x.db`, `postgresql+psycopg2://user@host/db`, `mysql+pymysql://...` -> RDBStorage (SQLite for
    one process, a server for many workers); anything else is a journal file, safe for many processes on
    one machine or a shared file system."""
    import optuna
    if re.match(r"^[a-z][a-z0-9+]*://", spec):
        for attempt in range(5):  # workers starting together race to create the schema: retry
            try:
                return optuna.storages.RDBStorage(spec)
            except Exception:  # noqa: BLE001 -- sqlalchemy's error types vary by driver
                if attempt == 4:
                    raise
                time.sleep(0.5 + random.random())
    from optuna.storages.journal import JournalFileBackend
    return optuna.storages.JournalStorage(JournalFileBackend(spec))
