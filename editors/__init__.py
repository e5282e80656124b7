"""Knowledge editors: the Editor interface, registry, model adapters and each editor."""
from editors.base import EditRequest, EditResult, Editor, PreservedFact  # noqa: F401
