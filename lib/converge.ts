// Pure decisions of the unattended converge command (scripts/converge.ts): which Pulumi stack locks are stale,
// how interrupted operations of a killed CLI are resolved, and what the engine's events say was changed.

/** A file-backend stack lock (.pulumi-state/.pulumi/locks/…/<id>.json), as the Pulumi CLI writes it. */
export interface PulumiLock {
    pid: number;
    username?: string;
    hostname: string;
    timestamp: string;
}

export type LockVerdict =
    | { kind: "stale"; reason: string }
    | { kind: "live"; reason: string }
    | { kind: "foreign"; reason: string };

/** Slack between the CLI's start and the lock's timestamp (a CLI writes its lock after it started). */
const START_SLACK_MS = 5000;

/**
 * A lock is stale only when it was written on this machine by a process that no longer exists. A process with
 * the lock's pid that started after the lock was written is a reused pid, not the locker. A lock of another
 * machine is never judged stale: nothing here can know whether that process still runs.
 *   processStartMs(pid): when the process with that pid started (epoch ms), or undefined when there is none.
 */
export function judgeLock(lock: PulumiLock, thisHost: string, processStartMs: (pid: number) => number | undefined): LockVerdict {
    const who = `pid ${lock.pid} on ${lock.hostname}${lock.username ? ` (${lock.username})` : ""}, written ${lock.timestamp}`;
    if (lock.hostname !== thisHost) return { kind: "foreign", reason: `held by ${who}: another machine; never cleared from here` };
    const written = Date.parse(lock.timestamp);
    const started = processStartMs(lock.pid);
    if (started === undefined) return { kind: "stale", reason: `held by ${who}, which no longer runs` };
    if (Number.isFinite(written) && started > written + START_SLACK_MS) return { kind: "stale", reason: `held by ${who}; that pid now belongs to a process started later` };
    return { kind: "live", reason: `held by ${who}, which is still running` };
}

/** Marks a resource whose update or delete was interrupted: the provider's diff sees a key the program does not
 *  set, so the next `up` re-applies the resource (every resource is idempotent) whatever the host got. */
export const INTERRUPTED_MARK = "mailinfraInterruptedRun";

export interface PendingOperation {
    type: string;
    resource: { urn: string };
}

export interface ResolvedPending {
    deployment: any;
    /** One line per interrupted operation and what happens to it. */
    resolved: string[];
}

/**
 * Drops the pending operations a killed CLI left in the checkpoint (the CLI refuses to clear pending creates
 * non-interactively). Interrupted creates are simply created again by the next `up`; interrupted updates and
 * deletes stay in the state, marked so the next `up` applies them again (their host side may be either the
 * old or the new version).
 */
export function resolvePending(deployment: any, at: string): ResolvedPending {
    const pending: PendingOperation[] = deployment?.pending_operations ?? [];
    if (!pending.length) return { deployment, resolved: [] };
    const byUrn = new Map<string, any[]>();
    for (const r of deployment.resources ?? []) byUrn.set(r.urn, [...(byUrn.get(r.urn) ?? []), r]);
    const resolved = pending.map((op) => {
        const name = op.resource.urn.split("::").pop();
        const inState = byUrn.get(op.resource.urn) ?? [];
        if (op.type === "creating" || !inState.length) return `${name}: interrupted while ${op.type}; it will be created again`;
        const custom = inState.filter((r) => r.custom);
        if (!custom.length) return `${name}: interrupted while ${op.type}; nothing on a host to apply again`;
        for (const r of custom) {
            r.inputs = { ...(r.inputs ?? {}), [INTERRUPTED_MARK]: at };
            r.outputs = { ...(r.outputs ?? {}), [INTERRUPTED_MARK]: at };
        }
        return `${name}: interrupted while ${op.type}; it will be applied again`;
    });
    const { pending_operations: _dropped, ...rest } = deployment;
    return { deployment: rest, resolved };
}

/** Engine step kinds that change a host. "same", "refresh" and "read" do not. */
const CHANGING_OPS = new Set(["create", "update", "delete", "replace", "create-replacement", "delete-replaced", "import"]);

export interface ConvergeOutcome {
    ok: boolean;
    /** "update mchenry/etc/exim4/aliases/wikimedia.test", one per changed resource, in the order they finished. */
    changed: string[];
    /** The summary event's counts (e.g. { same: 141, update: 1 }). */
    counts: Record<string, number>;
    errors: string[];
}

/** Reads `pulumi up --event-log` (one JSON engine event per line). */
export function summarizeEvents(eventLog: string): ConvergeOutcome {
    const changed = new Map<string, string>();
    const errors: string[] = [];
    let counts: Record<string, number> = {};
    let summary = false;
    for (const line of eventLog.split("\n")) {
        if (!line.trim()) continue;
        let ev: any;
        try {
            ev = JSON.parse(line);
        } catch {
            continue; // a line cut by a killed CLI
        }
        const out = ev.resOutputsEvent?.metadata;
        // components and the stack itself change nothing on a host
        const state = out?.new ?? out?.old;
        if (out && CHANGING_OPS.has(out.op) && !out.urn.includes("::pulumi:providers:") && !(state && !state.custom)) {
            const name = String(out.urn).split("::").pop()!;
            if (!changed.has(name)) changed.set(name, `${out.op} ${name}`);
        }
        const diag = ev.diagnosticEvent;
        if (diag?.severity === "error") errors.push(String(diag.message).trim());
        if (ev.summaryEvent) {
            summary = true;
            counts = ev.summaryEvent.resourceChanges ?? {};
        }
    }
    return { ok: summary && errors.length === 0, changed: [...changed.values()], counts, errors };
}

export type ConvergeResult = "converged" | "repaired" | "failed";

/** The command's exit codes (docs/ops.md "Unattended converge"). */
export const EXIT_CODES: Record<ConvergeResult, number> = { converged: 0, repaired: 2, failed: 1 };

export function verdict(upExitCode: number, outcome: ConvergeOutcome): ConvergeResult {
    if (upExitCode !== 0 || !outcome.ok) return "failed";
    return outcome.changed.length ? "repaired" : "converged";
}

/** The one-line summary the command prints last (and cron mails / the journal keeps). */
export function summaryLine(stack: string, result: ConvergeResult, outcome: ConvergeOutcome, seconds: number, notes: string[], log: string): string {
    const took = `${seconds.toFixed(0)} s`;
    const head =
        result === "converged"
            ? `converged, nothing drifted (${outcome.counts.same ?? 0} unchanged) in ${took}`
            : result === "repaired"
              ? `repaired ${outcome.changed.length} resource(s) in ${took}: ${listed(outcome.changed)}`
              : `FAILED after ${took}: ${oneLine(outcome.errors[0] ?? "pulumi up did not complete")}${outcome.changed.length ? ` (changed before the failure: ${listed(outcome.changed)})` : ""}`;
    return [`converge ${stack}: ${head}`, ...notes, `log ${log}`].join("; ");
}

/** The summary stays one readable line; the log lists every resource. */
const LISTED_MAX = 20;
function listed(changed: string[]): string {
    return changed.length > LISTED_MAX ? `${changed.slice(0, LISTED_MAX).join(", ")} and ${changed.length - LISTED_MAX} more (listed in the log)` : changed.join(", ");
}

/** An engine error (often several lines: the checker's output) folded into the summary line. */
function oneLine(s: string): string {
    const line = s
        .split("\n")
        .map((l) => l.trim())
        .filter((l) => l && !/^error:?$/.test(l))
        .join(" ")
        .replace(/^error: /, "");
    return line.length > 300 ? line.slice(0, 297) + "..." : line;
}
