/* exit: the end of a process, from sched_process_exit of its last thread.
 *
 * do_exit() counts the thread out of signal->live before this tracepoint, so 0 there means
 * the whole thread group is gone (one record per process, not per thread). task->exit_code
 * is the wait status: exit status << 8, or the killing signal (| 0x80 with a core dump).
 */

struct exit_event {
    u32 kind;
    s32 exit_code;         /* the wait(2) status */
    struct identity id;
};

BPF_PERCPU_ARRAY(exit_scratch, struct exit_event, 1);

RAW_TRACEPOINT_PROBE(sched_process_exit)
{
    if (is_self())
        return 0;
    char *task = (char *)bpf_get_current_task();
    if (KREAD(s32, KPTR(task, OFF_TASK_STRUCT_SIGNAL), OFF_SIGNAL_STRUCT_LIVE) != 0)
        return 0;  /* other threads of the process live on */
    u32 key = 0;
    struct exit_event *e = exit_scratch.lookup(&key);
    if (!e)
        return 0;
    e->kind = KIND_EXIT;
    e->exit_code = KREAD(s32, task, OFF_TASK_STRUCT_EXIT_CODE);
    fill_identity_of(task, &e->id);
    emit(e, sizeof(*e), LOST_EXIT);
    return 0;
}
