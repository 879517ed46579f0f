"""One error type per failure a user can fix; each message names the field, file or limit."""


class FeaturewatchError(Exception):
    """Base class: an error caused by user input or configuration, never a bug."""


class ConfigError(FeaturewatchError):
    """A configuration value (file, flag or environment) is missing or invalid."""


class CorpusError(FeaturewatchError):
    """The corpus source is missing, empty or unreadable."""


class BundleError(FeaturewatchError):
    """A dictionary bundle is missing, corrupt, or does not match its model."""


class ModelError(FeaturewatchError):
    """A model directory cannot be loaded or lacks the requested hook point."""


class InvalidRequest(FeaturewatchError):
    """A request field is out of range or contradicts another field."""

    def __init__(self, field: str, message: str, *, out_of_range: bool = False) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.out_of_range = out_of_range


class FlagError(FeaturewatchError):
    """A flagged-feature definition is invalid (unknown dictionary, feature out of range...)."""

    def __init__(self, message: str, *, field: str | None = None,
                 out_of_range: bool = False) -> None:
        super().__init__(message)
        self.field = field
        self.out_of_range = out_of_range
