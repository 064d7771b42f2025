"""Import ``function_app`` as the Functions host does and index its functions and bindings.

Only the programming model's own API is used, so a new blueprint needs no change here.
"""

from __future__ import annotations

import enum
import importlib.util
import logging
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import azure.functions as func
from azure.functions.decorators.function_app import Function

from devhost.errors import AppLoadError

log = logging.getLogger(__name__)

DEFAULT_SCRIPT_FILE = "function_app.py"
HTTP_TRIGGER = "httpTrigger"
BLOB_TRIGGER = "blobTrigger"
TIMER_TRIGGER = "timerTrigger"
SERVICE_BUS_TRIGGER = "serviceBusTrigger"
ORCHESTRATION_TRIGGER = "orchestrationTrigger"
ACTIVITY_TRIGGER = "activityTrigger"
SERVED_TRIGGERS = frozenset(
    {
        HTTP_TRIGGER,
        BLOB_TRIGGER,
        TIMER_TRIGGER,
        SERVICE_BUS_TRIGGER,
        ORCHESTRATION_TRIGGER,
        ACTIVITY_TRIGGER,
    }
)
DURABLE_CLIENT = "durableClient"


@dataclass(frozen=True, slots=True)
class FunctionSpec:
    """One function of the app as the host sees it.

    Attributes:
        name: the function name (``@app.function_name`` or the Python name).
        trigger_type: binding type of the trigger, e.g. ``httpTrigger``.
        trigger: the trigger binding as a plain dict (enums turned into strings).
        bindings: every binding of the function, trigger included, as plain dicts.
        user_function: the callable to invoke, called with keywords named after bindings.
        unserved: why the devhost does not serve it, or None when it does.
    """

    name: str
    trigger_type: str
    trigger: Mapping[str, Any]
    bindings: tuple[Mapping[str, Any], ...]
    user_function: Callable[..., Any]
    unserved: str | None = None

    @property
    def trigger_name(self) -> str:
        """The parameter name the trigger value is passed as."""
        return str(self.trigger["name"])

    @property
    def durable_client(self) -> str | None:
        """The parameter name of its Durable client binding, or None without one."""
        for binding in self.bindings:
            if binding.get("type") == DURABLE_CLIENT:
                return str(binding["name"])
        return None

    @property
    def served(self) -> bool:
        """True when the devhost dispatches this function."""
        return self.unserved is None


@dataclass(frozen=True, slots=True)
class LoadedApp:
    """The imported app: its file, its module name and its functions in registration order."""

    script_path: Path
    module_name: str
    functions: tuple[FunctionSpec, ...]

    @property
    def uses_durable(self) -> bool:
        """True when the app has orchestrators, activities or Durable client bindings."""
        return any(
            f.trigger_type in (ORCHESTRATION_TRIGGER, ACTIVITY_TRIGGER) or f.durable_client
            for f in self.functions
        )

    def by_trigger(self, trigger_type: str) -> list[FunctionSpec]:
        """The served functions with the given trigger type."""
        return [f for f in self.functions if f.served and f.trigger_type == trigger_type]


def load_app(
    app_dir: Path,
    *,
    script_file: str | None = None,
    module_name: str = "function_app",
) -> LoadedApp:
    """Import the app module and index its functions through the programming model's API.

    As the Python worker does, ``app_dir`` goes first on ``sys.path`` and the module must hold
    exactly one function app (a ``FunctionApp``, ``DFApp`` or other ``FunctionRegister``).

    Args:
        app_dir: the app's root directory.
        script_file: the module file; default ``PYTHON_SCRIPT_FILE_NAME`` or
            ``function_app.py``.
        module_name: the name to import it under (tests use another to stay apart).

    Returns:
        The app and its functions; ``get_functions()`` is called once, here.

    Raises:
        AppLoadError: the file is missing, fails to import, or holds no or several apps.
    """
    app_dir = app_dir.resolve()
    script = app_dir / (
        script_file or os.environ.get("PYTHON_SCRIPT_FILE_NAME") or DEFAULT_SCRIPT_FILE
    )
    if not script.exists():
        raise AppLoadError(f"no function app at {script}")
    existing = sys.modules.get(module_name)
    if existing is not None and Path(getattr(existing, "__file__", "")).resolve() != script:
        raise AppLoadError(f"a different module named {module_name} is already imported")

    if str(app_dir) not in sys.path:
        sys.path.insert(0, str(app_dir))
    module = existing or _import(script, module_name)
    registers = [v for v in vars(module).values() if isinstance(v, func.FunctionRegister)]
    if len(registers) != 1:
        raise AppLoadError(
            f"{script} must define exactly one function app at module level, found "
            f"{len(registers)}"
        )
    try:
        functions = registers[0].get_functions()
    except Exception as exc:
        raise AppLoadError(f"indexing the functions of {script} failed: {exc}") from exc
    specs = tuple(_spec(f, os.environ) for f in functions)
    return LoadedApp(script_path=script, module_name=module_name, functions=specs)


def _import(script: Path, module_name: str) -> Any:
    spec = importlib.util.spec_from_file_location(module_name, script)
    if spec is None or spec.loader is None:
        raise AppLoadError(f"cannot import {script}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[module_name]
        log.exception("importing %s failed", script)
        raise AppLoadError(f"importing {script} failed: {type(exc).__name__}: {exc}") from exc
    return module


def plain(value: Any) -> Any:
    """Turn binding values into JSON-like data: enums to their value, recursively."""
    if isinstance(value, enum.Enum):
        return plain(value.value)
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def disabled_setting(name: str) -> str:
    """The app setting that switches a function off: ``AzureWebJobs.<name>.Disabled``."""
    return f"AzureWebJobs.{name}.Disabled"


# Limitation: a disabled HTTP function answers 501 naming the setting; the Functions host
# answers 404 (and still runs it for a caller with the master key).
def _disabled(name: str, environ: Mapping[str, str]) -> bool:
    # "true" or "1", in any case. The devhost also reads ``AzureWebJobs_<name>_Disabled``,
    # as a shell cannot export a name with dots.
    for setting in (disabled_setting(name), f"AzureWebJobs_{name}_Disabled"):
        if environ.get(setting, "").strip().lower() in ("true", "1"):
            return True
    return False


def _spec(function: Function, environ: Mapping[str, str]) -> FunctionSpec:
    name = str(function.get_function_name())
    raw_trigger = function.get_trigger()
    if raw_trigger is None:
        raise AppLoadError(f"function {name} has no trigger")
    trigger = plain(raw_trigger.get_dict_repr())
    bindings = tuple(plain(b.get_dict_repr()) for b in function.get_bindings())
    trigger_type = str(trigger["type"])
    return FunctionSpec(
        name=name,
        trigger_type=trigger_type,
        trigger=trigger,
        bindings=bindings,
        user_function=function.get_user_function(),
        unserved=(
            f"disabled by the setting {disabled_setting(name)}"
            if _disabled(name, environ)
            else _unserved_reason(trigger_type, trigger, bindings)
        ),
    )


def _unserved_reason(
    trigger_type: str, trigger: Mapping[str, Any], bindings: tuple[Mapping[str, Any], ...]
) -> str | None:
    if trigger_type not in SERVED_TRIGGERS:
        return f"{trigger_type} is not served by devhost yet"
    if trigger_type == SERVICE_BUS_TRIGGER and trigger.get("topicName"):
        return "Service Bus topic subscriptions are not served by devhost yet"
    others = [b for b in bindings if b.get("name") != trigger.get("name")]
    if trigger_type == HTTP_TRIGGER:
        others = [
            b for b in others if not (b.get("type") == "http" and b.get("name") == "$return")
        ]
    others = [b for b in others if b.get("type") != DURABLE_CLIENT]
    if others:
        kinds = ", ".join(sorted({f"{b.get('type')} ({b.get('name')})" for b in others}))
        return f"its other bindings are not served by devhost yet: {kinds}"
    return None
