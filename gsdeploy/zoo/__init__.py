"""The model zoo: reference architectures registered by name with their input shape and baseline."""

from gsdeploy.zoo.registry import DEFAULT_MODEL, ZooEntry, create_model, get_entry, list_entries

__all__ = ["DEFAULT_MODEL", "ZooEntry", "create_model", "get_entry", "list_entries"]
