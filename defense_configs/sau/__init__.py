"""The shipped YAML files, installed as the package ``sau_plugin.configs``."""
