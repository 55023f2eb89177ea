"""ONNX Runtime sessions: device name -> execution provider, threads, options, node placement.

Device side: standard library + onnxruntime only, and onnxruntime is imported inside functions so
that ``check``/``env`` still work where it is missing.

Providers and fallback
----------------------
ORT needs the CPU execution provider for whatever the asked provider cannot run (shape ops,
unsupported nodes); it appends CPU itself unless the session forbids it. So for a non-CPU device the
session is created with ``[asked, "CPUExecutionProvider"]`` and then *checked*:

* ``session.get_providers()`` must contain the asked provider (ORT drops one that fails to load);
* the node -> provider placement is read and recorded as ``node_providers`` {provider: node count},
  from ``InferenceSession.get_provider_graph_assignment_info()`` where ORT has it (>= 1.23, session
  config ``session.record_ep_graph_assignment_info``), otherwise from the ``provider`` field of the
  kernel events of a short profiled run (see :func:`probe_node_providers`).

The ``fallback`` policy says what happens next:

* ``"error"`` (default): the asked provider must be in the session and own at least one node;
  otherwise :class:`ProviderFallbackError`. Partial placement is recorded, not refused.
* ``"allow"``: never refuse; the record says ``fallback: true`` when the asked provider lost nodes.
* ``"forbid"``: every node must run on the asked provider: ORT's ``session.disable_cpu_ep_fallback``
  is set (ORT refuses to build a session that needs CPU) and the placement is checked again.

ORT's own Python-level retry on CPU (``enable_fallback``) is always switched off: it would print to
stdout, which carries the JSON records, and would hide the failure.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

# user device name -> ORT execution provider name
DEVICES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "tensorrt_rtx": "NvTensorRTRTXExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "xnnpack": "XnnpackExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "dml": "DmlExecutionProvider",
    "qnn": "QNNExecutionProvider",
    "nnapi": "NnapiExecutionProvider",
    "acl": "ACLExecutionProvider",
    "armnn": "ArmNNExecutionProvider",
    "rocm": "ROCMExecutionProvider",
    "migraphx": "MIGraphXExecutionProvider",
    "webgpu": "WebGpuExecutionProvider",
    "vitisai": "VitisAIExecutionProvider",
    "cann": "CANNExecutionProvider",
}

_HINTS = {
    "cuda": "pip install onnxruntime-gpu (with matching CUDA/cuDNN); on Jetson use the "
    "onnxruntime-gpu wheel built for your JetPack",
    "tensorrt": "needs onnxruntime-gpu built with TensorRT and the TensorRT libraries on the "
    "library path (Jetson: the JetPack onnxruntime-gpu wheel)",
    "tensorrt_rtx": "needs an onnxruntime build with the TensorRT RTX execution provider",
    "coreml": "macOS only: the onnxruntime wheel for macOS includes CoreML",
    "xnnpack": "needs an onnxruntime build with --use_xnnpack",
    "openvino": "pip install onnxruntime-openvino",
    "dml": "Windows only: pip install onnxruntime-directml",
    "qnn": "pip install onnxruntime-qnn (Qualcomm)",
    "nnapi": "Android only: an onnxruntime build with NNAPI",
    "acl": "needs an onnxruntime build with --use_acl (Arm Compute Library)",
    "armnn": "needs an onnxruntime build with --use_armnn",
    "rocm": "needs the onnxruntime ROCm build (AMD GPUs)",
    "migraphx": "needs the onnxruntime MIGraphX build (AMD GPUs)",
}

OPT_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}

EXECUTION_MODES = {
    "sequential": "ORT_SEQUENTIAL",
    "parallel": "ORT_PARALLEL",
}

FALLBACK_POLICIES = ("error", "allow", "forbid")

CPU_PROVIDER = "CPUExecutionProvider"
_ASSIGNMENT_CONFIG = "session.record_ep_graph_assignment_info"
_NO_CPU_FALLBACK_CONFIG = "session.disable_cpu_ep_fallback"


class RuntimeSpecError(ValueError):
    """A bad value in a measurement spec; the message names the value and what is valid."""

    def __init__(self, message: str, hint: Optional[str] = None) -> None:
        super().__init__(message)
        self.hint = hint


class ProviderUnavailableError(RuntimeError):
    """The asked execution provider is not in this onnxruntime build."""

    def __init__(self, message: str, hint: Optional[str] = None) -> None:
        super().__init__(message)
        self.hint = hint


class ProviderFallbackError(RuntimeError):
    """The session was built but the asked provider did not get the nodes the policy requires."""

    def __init__(self, message: str, hint: Optional[str] = None) -> None:
        super().__init__(message)
        self.hint = hint


def _choices(names) -> str:
    return ", ".join(sorted(names))


def provider_for(device: str) -> str:
    """ORT execution provider name for a user device name (``RuntimeSpecError`` if unknown)."""
    if not isinstance(device, str) or device not in DEVICES:
        raise RuntimeSpecError(f"device {device!r} is not one of: {_choices(DEVICES)}")
    return DEVICES[device]


def available_providers() -> List[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


def check_provider(device: str) -> str:
    """Return the provider for ``device`` or raise ``ProviderUnavailableError`` (one line)."""
    provider = provider_for(device)
    available = available_providers()
    if provider not in available:
        hint = _HINTS.get(device, "install an onnxruntime build that includes it")
        raise ProviderUnavailableError(
            f"device {device!r} needs {provider}, which this onnxruntime does not have "
            f"(available: {', '.join(available)}); hint: {hint}",
            hint=hint,
        )
    return provider


def validate_options(
    opt_level: str = "all",
    execution_mode: str = "sequential",
    fallback: str = "error",
    intra_op_threads: int = 0,
    inter_op_threads: int = 0,
) -> None:
    """Raise ``RuntimeSpecError`` naming the first bad session option."""
    if opt_level not in OPT_LEVELS:
        raise RuntimeSpecError(f"opt_level {opt_level!r} is not one of: {', '.join(OPT_LEVELS)}")
    if execution_mode not in EXECUTION_MODES:
        raise RuntimeSpecError(
            f"execution_mode {execution_mode!r} is not one of: {', '.join(EXECUTION_MODES)}"
        )
    if fallback not in FALLBACK_POLICIES:
        raise RuntimeSpecError(
            f"fallback {fallback!r} is not one of: {', '.join(FALLBACK_POLICIES)}"
        )
    for name, value in (
        ("intra_op_threads", intra_op_threads),
        ("inter_op_threads", inter_op_threads),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise RuntimeSpecError(
                f"{name} {value!r} is invalid; expected an integer >= 0 (0 = ORT default)"
            )


@dataclass
class SessionInfo:
    """A created session and what was actually used to create it."""

    session: Any
    device: str
    provider: str
    providers_requested: List[str]
    providers_session: List[str]
    options: Dict[str, Any]
    create_ms: float
    node_providers: Optional[Dict[str, int]] = None
    node_providers_method: str = "unavailable"
    fallback: Optional[bool] = None
    notes: List[str] = field(default_factory=list)

    def describe(self) -> Dict[str, Any]:
        """JSON-serialisable description (everything but the session object)."""
        return {
            "device": self.device,
            "provider": self.provider,
            "providers_requested": list(self.providers_requested),
            "providers_session": list(self.providers_session),
            "node_providers": self.node_providers,
            "node_providers_method": self.node_providers_method,
            "fallback": self.fallback,
            "create_ms": round(self.create_ms, 4),
            "options": dict(self.options),
        }


def _has_assignment_api() -> bool:
    import onnxruntime as ort

    return hasattr(ort.InferenceSession, "get_provider_graph_assignment_info")


def make_session_options(
    *,
    intra_op_threads: int = 0,
    inter_op_threads: int = 0,
    execution_mode: str = "sequential",
    opt_level: str = "all",
    enable_profiling: bool = False,
    profile_prefix: Optional[str] = None,
    config: Optional[Dict[str, str]] = None,
    log_severity: int = 3,
    optimized_model_path: Optional[str] = None,
) -> Tuple[Any, Dict[str, Any]]:
    """Build ``ort.SessionOptions``; return it and a dict of what was set.

    ``optimized_model_path``: where ORT also writes the graph it runs after its optimisations."""
    import onnxruntime as ort

    validate_options(opt_level, execution_mode, "error", intra_op_threads, inter_op_threads)
    so = ort.SessionOptions()
    so.intra_op_num_threads = intra_op_threads
    so.inter_op_num_threads = inter_op_threads
    so.execution_mode = getattr(ort.ExecutionMode, EXECUTION_MODES[execution_mode])
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, OPT_LEVELS[opt_level])
    so.log_severity_level = log_severity
    if enable_profiling:
        so.enable_profiling = True
        if profile_prefix:
            so.profile_file_prefix = profile_prefix
    if optimized_model_path:
        so.optimized_model_filepath = optimized_model_path
    for key, value in (config or {}).items():
        so.add_session_config_entry(key, value)
    used = {
        "intra_op_num_threads": so.intra_op_num_threads,
        "inter_op_num_threads": so.inter_op_num_threads,
        "execution_mode": execution_mode,
        "graph_optimization_level": opt_level,
        "enable_profiling": bool(so.enable_profiling),
        "config": dict(config or {}),
    }
    return so, used


def create_session(
    model_path: str,
    device: str = "cpu",
    *,
    intra_op_threads: int = 0,
    inter_op_threads: int = 0,
    execution_mode: str = "sequential",
    opt_level: str = "all",
    provider_options: Optional[Dict[str, Any]] = None,
    fallback: str = "error",
    enable_profiling: bool = False,
    profile_prefix: Optional[str] = None,
    check_placement: bool = True,
    config_entries: Optional[Dict[str, str]] = None,
    optimized_model_path: Optional[str] = None,
) -> SessionInfo:
    """Create an ORT session for ``device`` and check where its nodes went.

    ``check_placement=False`` skips the node-placement check (used for the profiled session, whose
    own profile says where nodes ran). ``config_entries``: extra session config entries.
    ``optimized_model_path``: also write the optimised graph there (see :mod:`.graph`).
    """
    import onnxruntime as ort

    validate_options(opt_level, execution_mode, fallback, intra_op_threads, inter_op_threads)
    provider = check_provider(device)
    if provider_options is not None and not isinstance(provider_options, dict):
        raise RuntimeSpecError(
            f"provider_options {provider_options!r} is invalid; expected an object of strings"
        )

    config: Dict[str, str] = dict(config_entries or {})
    use_api = check_placement and _has_assignment_api()
    if use_api:
        config[_ASSIGNMENT_CONFIG] = "1"
    if provider != CPU_PROVIDER and fallback == "forbid":
        config[_NO_CPU_FALLBACK_CONFIG] = "1"
    so, used = make_session_options(
        intra_op_threads=intra_op_threads,
        inter_op_threads=inter_op_threads,
        execution_mode=execution_mode,
        opt_level=opt_level,
        enable_profiling=enable_profiling,
        profile_prefix=profile_prefix,
        config=config,
        optimized_model_path=optimized_model_path,
    )

    if provider == CPU_PROVIDER:
        providers = [CPU_PROVIDER]
        options = [dict(provider_options or {})]
    elif fallback == "forbid":
        providers = [provider]
        options = [dict(provider_options or {})]
    else:
        providers = [provider, CPU_PROVIDER]
        options = [dict(provider_options or {}), {}]
    used["provider_options"] = dict(provider_options or {})

    t0 = time.perf_counter()
    sess = ort.InferenceSession(
        model_path, so, providers=providers, provider_options=options, enable_fallback=0
    )
    create_ms = (time.perf_counter() - t0) * 1e3

    info = SessionInfo(
        session=sess,
        device=device,
        provider=provider,
        providers_requested=providers,
        providers_session=list(sess.get_providers()),
        options=used,
        create_ms=create_ms,
    )
    if use_api:
        info.node_providers = node_providers_from_api(sess)
        if info.node_providers is not None:
            info.node_providers_method = "ort_assignment_info"
    return info


def node_providers_from_api(sess: Any) -> Optional[Dict[str, int]]:
    """{provider: node count} from ORT's graph-assignment info, or None if ORT cannot say."""
    try:
        subgraphs = sess.get_provider_graph_assignment_info()
    except Exception:  # older or odd builds: the caller falls back to the profile
        return None
    counts: Dict[str, int] = {}
    for sg in subgraphs:
        counts[sg.ep_name] = counts.get(sg.ep_name, 0) + len(sg.get_nodes())
    return counts


def probe_node_providers(
    model_path: str, feeds: Dict[str, Any], device: str, **session_kwargs: Any
) -> Dict[str, int]:
    """Placement from one profiled run of a throw-away session (ORT without the assignment API)."""
    import os
    import shutil
    import tempfile

    from . import profile as _profile

    tmp = tempfile.mkdtemp(prefix="edgeattn-probe-")
    try:
        info = create_session(
            model_path,
            device,
            enable_profiling=True,
            profile_prefix=os.path.join(tmp, "probe"),
            check_placement=False,
            **session_kwargs,
        )
        info.session.run(None, feeds)
        path = info.session.end_profiling()
        events = _profile.load_events(path)
        del info
        return _profile.node_providers_from_events(_profile.node_events(events))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def apply_fallback_policy(info: SessionInfo, policy: str) -> None:
    """Set ``info.fallback`` and raise ``ProviderFallbackError`` when the policy is broken."""
    asked = info.provider
    if asked == CPU_PROVIDER:
        info.fallback = False
        return
    hint = "set fallback to 'allow' to record the run anyway, or use device 'cpu'"
    if asked not in info.providers_session:
        info.fallback = True
        if policy != "allow":
            raise ProviderFallbackError(
                f"{asked} was asked for but the session only has "
                f"{', '.join(info.providers_session)} (it failed to initialise; check its "
                f"libraries and provider_options)",
                hint=hint,
            )
        info.notes.append(f"{asked} missing from the session; everything ran on CPU")
        return
    counts = info.node_providers
    if counts is None:
        info.fallback = None
        info.notes.append("node placement unknown: this onnxruntime cannot report it")
        return
    total = sum(counts.values())
    on_asked = counts.get(asked, 0)
    elsewhere = total - on_asked
    info.fallback = elsewhere > 0
    if policy == "error" and on_asked == 0:
        raise ProviderFallbackError(
            f"{asked} got 0 of {total} nodes; they ran on "
            f"{', '.join(f'{p} ({n})' for p, n in sorted(counts.items()))}",
            hint=hint,
        )
    if policy == "forbid" and elsewhere > 0:
        raise ProviderFallbackError(
            f"fallback 'forbid': {elsewhere} of {total} nodes did not run on {asked} "
            f"({', '.join(f'{p} ({n})' for p, n in sorted(counts.items()))})",
            hint="use fallback 'error' (default) to allow partial placement",
        )
    if elsewhere > 0:
        info.notes.append(f"{elsewhere} of {total} nodes ran outside {asked}")
