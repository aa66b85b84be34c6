"""Model fields that redact secrets on their way to the database.

Every free-text or JSON field that can carry model output, tool output, error text or anything a
person or a webhook typed is declared with one of these: `.create()`, `.save()`, `bulk_create()`,
`bulk_update()` and `QuerySet.update()` all prepare values through `get_prep_value`, so no write
path can forget the redaction. (Only hand-written SQL bypasses it: agentops/runs/steps.py redacts
before it builds its statement.)

Lookups go through the same preparation, so filtering on a secret matches its redacted form.
"""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.db import models

from agentops.redaction import Redacted, redact, redact_text


def _prepared_text(value: Any) -> Any:
    if isinstance(value, Redacted):
        return value.value
    if isinstance(value, str):
        return redact_text(value)
    return value


class RedactedTextField(models.TextField):
    def get_prep_value(self, value: Any) -> Any:
        if isinstance(value, Redacted):
            return value.value
        return _prepared_text(super().get_prep_value(value))


class RedactedCharField(models.CharField):
    """A CharField whose value is redacted, then cut to max_length ("[REDACTED]" may be longer
    than the secret it replaces; a value too long for its column must not fail the write)."""

    def get_prep_value(self, value: Any) -> Any:
        if isinstance(value, Redacted):
            value = value.value
        else:
            value = _prepared_text(super().get_prep_value(value))
        if isinstance(value, str) and self.max_length is not None and len(value) > self.max_length:
            value = value[: self.max_length]
        return value


class RedactedJSONField(models.JSONField):
    def get_prep_value(self, value: Any) -> Any:
        if isinstance(value, Redacted):
            return value.value
        value = super().get_prep_value(value)
        if hasattr(value, "resolve_expression"):
            return value  # an expression computed by the database (F(), Value()): nothing to scan here
        return redact(value)


REDACTED_FIELD_TYPES = (RedactedTextField, RedactedCharField, RedactedJSONField)


def redacted_fields(model: type[models.Model]) -> list[models.Field]:
    return [field for field in model._meta.concrete_fields if isinstance(field, REDACTED_FIELD_TYPES)]


def scrub_stored_secrets(models_to_scrub: list[type[models.Model]] | None = None, *, batch_size: int = 500) -> int:
    """Rewrite rows stored before their fields redacted (or before a secret was configured).

    Returns the number of rows changed. Usable from a data migration (RunPython) with the
    migration's historical models, or by hand after adding a value to AGENTOPS_SECRET_VALUES."""
    changed = 0
    for model in models_to_scrub or apps.get_models():
        fields = redacted_fields(model)
        if not fields:
            continue
        names = [field.name for field in fields]
        for row in model._default_manager.only("pk", *names).iterator(chunk_size=batch_size):
            updates = {}
            for field in fields:
                current = getattr(row, field.attname)
                cleaned = field.get_prep_value(current)
                if cleaned != current:
                    updates[field.attname] = Redacted(cleaned)
            if updates:
                model._default_manager.filter(pk=row.pk).update(**updates)
                changed += 1
    return changed


def scrub_stored_secrets_migration(apps: Any, schema_editor: Any) -> None:
    """For `migrations.RunPython(scrub_stored_secrets_migration, migrations.RunPython.noop)`."""
    scrub_stored_secrets(
        [model for model in apps.get_models() if redacted_fields(model)],
    )
