/* bash commands: a uretprobe on readline() returns the line the user typed.
 *
 * The same program is attached to every bash binary found (and to libreadline for a bash
 * linked against it); the line is cut at LINE_MAX_BYTES and the cut is flagged.
 */

struct bash_event {
    u32 kind;
    u32 line_len;          /* bytes captured, without the NUL */
    u32 truncated;
    u32 pad;
    struct identity id;
    char line[LINE_MAX_BYTES + 1];
};

BPF_PERCPU_ARRAY(bash_scratch, struct bash_event, 1);

int on_readline_return(struct pt_regs *ctx)
{
    const char *line = (const char *)PT_REGS_RC(ctx);
    if (!line || is_self())
        return 0;
    u32 key = 0;
    struct bash_event *e = bash_scratch.lookup(&key);
    if (!e)
        return 0;
    e->kind = KIND_BASH;
    e->truncated = 0;
    long n = bpf_probe_read_user_str(e->line, sizeof(e->line), line);
    if (n <= 0)
        return 0;
    if (n == sizeof(e->line)) {
        char next = 0;
        bpf_probe_read_user(&next, 1, line + LINE_MAX_BYTES);
        e->truncated = next != 0;
    }
    e->line_len = n - 1;
    fill_identity(&e->id);
    u64 size = offsetof(struct bash_event, line) + (u64)n;
    /* Keep the bound visible to the verifier right before the use. */
    asm volatile("" : "+r"(size));
    if (size > sizeof(*e))
        return 0;
    emit(e, size, LOST_BASH);
    return 0;
}
