/* namespace entry: setns(2), unshare(2), and clone/clone3 asking for any CLONE_NEW* flag.
 *
 * sys_enter_* records the request and the caller's namespace inodes (before) per thread.
 * For clone, sched_process_fork adds the child's inodes (after) and pid. sys_exit_* adds
 * the return value (and for setns/unshare the caller's inodes after) and emits, so a
 * refused attempt (EPERM) is an event too.
 */

struct ns_event {
    u32 kind;
    u32 syscall;
    s32 retval;
    s32 fd;                /* setns only, else -1 */
    u64 flags;             /* nstype for setns, flags for unshare/clone */
    u32 child_pid;         /* clone only */
    u32 pad;
    struct ns_set before;
    struct ns_set after;
    struct identity id;
};

BPF_TABLE("lru_hash", u32, struct ns_event, ns_pending, NS_PENDING);
/* The record is built here before it is stashed: too big for the BPF stack. */
BPF_PERCPU_ARRAY(ns_scratch, struct ns_event, 1);

static __always_inline int ns_enter(u32 syscall, s32 fd, u64 flags)
{
    if (is_self())
        return 0;
    u32 tid = (u32)bpf_get_current_pid_tgid();
    u32 key = 0;
    struct ns_event *e = ns_scratch.lookup(&key);
    if (!e)
        return 0;
    __builtin_memset(e, 0, sizeof(*e));
    e->kind = KIND_NS;
    e->syscall = syscall;
    e->fd = fd;
    e->flags = flags;
    read_namespaces((char *)bpf_get_current_task(), &e->before);
    ns_pending.update(&tid, e);
    return 0;
}

static __always_inline int ns_exit(long ret)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    struct ns_event *e = ns_pending.lookup(&tid);
    if (!e)
        return 0;
    e->retval = (s32)ret;
    if (e->syscall == SYSCALL_SETNS || e->syscall == SYSCALL_UNSHARE)
        read_namespaces((char *)bpf_get_current_task(), &e->after);
    fill_identity(&e->id);
    emit(e, sizeof(*e), LOST_NS);
    ns_pending.delete(&tid);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_setns)
{
    return ns_enter(SYSCALL_SETNS, args->fd, (u64)args->flags);
}

TRACEPOINT_PROBE(syscalls, sys_exit_setns)
{
    return ns_exit(args->ret);
}

TRACEPOINT_PROBE(syscalls, sys_enter_unshare)
{
    u64 flags = args->unshare_flags;
    if (!(flags & NEW_NS_FLAGS))
        return 0;
    return ns_enter(SYSCALL_UNSHARE, -1, flags);
}

TRACEPOINT_PROBE(syscalls, sys_exit_unshare)
{
    return ns_exit(args->ret);
}

TRACEPOINT_PROBE(syscalls, sys_enter_clone)
{
    u64 flags = args->clone_flags;
    if (!(flags & NEW_NS_FLAGS))
        return 0;
    return ns_enter(SYSCALL_CLONE, -1, flags);
}

TRACEPOINT_PROBE(syscalls, sys_exit_clone)
{
    return ns_exit(args->ret);
}

TRACEPOINT_PROBE(syscalls, sys_enter_clone3)
{
    u64 flags = 0;
    /* struct clone_args starts with the u64 flags (uapi, stable). */
    bpf_probe_read_user(&flags, sizeof(flags), (void *)args->uargs);
    if (!(flags & NEW_NS_FLAGS))
        return 0;
    return ns_enter(SYSCALL_CLONE3, -1, flags);
}

TRACEPOINT_PROBE(syscalls, sys_exit_clone3)
{
    return ns_exit(args->ret);
}

/* The child exists here with its new namespaces: args are (parent, child). */
static __always_inline void ns_on_fork(struct bpf_raw_tracepoint_args *ctx)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    struct ns_event *e = ns_pending.lookup(&tid);
    if (!e || (e->syscall != SYSCALL_CLONE && e->syscall != SYSCALL_CLONE3))
        return;
    char *child = (char *)ctx->args[1];
    e->child_pid = KREAD(u32, child, OFF_TASK_STRUCT_PID);
    read_namespaces(child, &e->after);
}

#if !FAMILY_FORK
/* Without the fork family, whose program calls ns_on_fork, the tracepoint is ours. */
RAW_TRACEPOINT_PROBE(sched_process_fork)
{
    ns_on_fork(ctx);
    return 0;
}
#endif
