"""C front end shared by analysis and build.

Stable API: ``preprocess``, ``parse``, ``TranslationUnit``, ``FunctionDef``,
``changed_functions`` (plus ``ChangeSet``, ``LocalStatic``, ``GlobalVar``, ``CFrontError``).
"""

from .diff import ChangeSet, changed_functions, function_text
from .errors import CFrontError
from .names import FunctionNames, function_names
from .preprocess import SHIM_HEADER, filter_cflags, preprocess
from .tu import FileScopeName, FunctionDef, GlobalVar, LocalStatic, TranslationUnit, parse

__all__ = [
    "SHIM_HEADER",
    "CFrontError",
    "ChangeSet",
    "FileScopeName",
    "FunctionDef",
    "FunctionNames",
    "GlobalVar",
    "LocalStatic",
    "TranslationUnit",
    "changed_functions",
    "filter_cflags",
    "function_names",
    "function_text",
    "parse",
    "preprocess",
]
