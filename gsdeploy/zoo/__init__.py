"""The model zoo: reference architectures registered by name with their input shape and baseline."""

from gsdeploy.zoo.registry import (DEFAULT_MODEL, ZooEntry, create, create_model, get_entry, is_model, list_entries,
                                   list_models)

__all__ = ["DEFAULT_MODEL", "ZooEntry", "create", "create_model", "get_entry", "is_model", "list_entries",
           "list_models"]
