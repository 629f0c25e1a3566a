/* fork: a new process (not a new thread), from sched_process_fork in the parent's context.
 *
 * The record is the child's identity, read from the child task: its pid and start time,
 * its parent, process group and session (inherited), credentials, tty and namespaces. The
 * namespaces family's clone bookkeeping shares this tracepoint (one program per name).
 */

struct fork_event {
    u32 kind;
    u32 pad;
    struct identity id;
};

BPF_PERCPU_ARRAY(fork_scratch, struct fork_event, 1);

/* args are (parent, child). */
RAW_TRACEPOINT_PROBE(sched_process_fork)
{
#if FAMILY_NS
    ns_on_fork(ctx);
#endif
    char *child = (char *)ctx->args[1];
    if (is_self() || KREAD(u32, child, OFF_TASK_STRUCT_PID) !=
                         KREAD(u32, child, OFF_TASK_STRUCT_TGID))
        return 0;  /* a thread, not a process */
    u32 key = 0;
    struct fork_event *e = fork_scratch.lookup(&key);
    if (!e)
        return 0;
    e->kind = KIND_FORK;
    fill_identity_of(child, &e->id);
    emit(e, sizeof(*e), LOST_FORK);
    return 0;
}
