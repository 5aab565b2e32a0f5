// Plain-text view of a host plan for code review (committed under rendered/<stack>/).
import { HostPlan } from "./plan";

export function planSummary(plan: HostPlan): string {
    const lines = [
        `# ${plan.host} (${plan.role}) — what mailinfra manages on this host`,
        `packages: ${plan.packages.join(" ")}`,
        ...plan.users.map((u) => `user: ${u.name} (system, home ${u.home})`),
        ...plan.groupMemberships.map((m) => `group member: ${m.user} in ${m.group}`),
        ...plan.directories.map((d) => `directory: ${d.path} ${d.owner}:${d.group} ${d.mode}`),
        ...plan.mounts.map((m) => `tmpfs: ${m.path} ${m.owner}:${m.group} ${m.mode} size ${m.size}`),
        ...plan.files.map((f) => `file: ${f.path} ${f.owner}:${f.group} ${f.mode}${f.validate ? ` checked by: ${f.validate}` : ""}${f.notify?.length ? ` → ${f.notify.join(", ")}` : ""}${f.secret ? " [secret]" : ""}`),
        ...plan.cron.map((c) => `cron: /etc/cron.d/${c.name}: ${c.schedule} ${c.user} ${c.command}`),
        ...plan.steps.map((s) => `step: ${s.name} (after ${s.after.join(", ")})${s.secretStdin ? ` reads secret ${s.secretStdin} on stdin` : ""}`),
        ...plan.services.map((s) => `service: ${s.name} (${s.onChange} when its files change)`),
        ...plan.ports.map((p) => `port: tcp/${p.port} from ${Array.isArray(p.from) ? p.from.join(", ") || "nobody" : p.from}: ${p.service}`),
    ];
    return lines.join("\n") + "\n";
}

/** Every file of the plan as it lands on the host; secret contents are masked. */
export function renderedFiles(plan: HostPlan): Record<string, string> {
    const out: Record<string, string> = { "PLAN.txt": planSummary(plan) };
    for (const f of plan.files) out[f.path.replace(/^\//, "")] = f.secret ? "[secret content]\n" : f.content;
    for (const s of plan.steps) out[`steps/${s.name}.sh`] = s.script + "\n";
    return out;
}
