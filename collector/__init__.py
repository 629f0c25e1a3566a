"""audit-collector: eBPF host audit agent (exec, namespace entry, bash commands) for ECS."""

__version__ = "0.1.0"
