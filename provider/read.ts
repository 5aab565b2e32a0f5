// read() of the mailinfra provider (`pulumi up --refresh`): observes each resource on its host and returns
// the observed state in the very properties diff() compares, so the engine shows the drift as its normal diff
// and `up` repairs it. The reads of one host that arrive together run as one remote script (one SSH round trip).
import { isDeepStrictEqual } from "util";
import { sha256 } from "../lib/hash";
import { batchMarker, BatchItem, BatchResult, batchScript, ensureInstallIdScript, fileDifferences, fileObserveScript, INSTALL_ID_FILE, packagesNotInstalled, packagesObserveScript, parseBatch, parseFileObservation } from "../lib/observe";
import { isSecret, SECRET_SIG, SECRET_VAL, unwrapSecrets } from "./resources";
import { Connection, sessionFor } from "./ssh";

const secret = (value: unknown) => ({ [SECRET_SIG]: SECRET_VAL, value });

/** Outputs that are not inputs (never compared with the program's inputs). */
export const OUTPUT_ONLY = ["sha256", "stdout", "installId"];
/** Outputs of older provider versions, dropped at the next read (observedSha256 was a clear hash of secret files). */
const LEGACY_OUTPUTS = ["observedSha256", "observedMeta"];

export type ReadOutcome = { gone: true; why: string } | { gone: false; props: Record<string, unknown> };

interface Observer {
    /** Read-only script whose output judge() gets; undefined: only the host's install id is checked. */
    script(p: any, props: any): string | undefined;
    judge(p: any, props: Record<string, unknown>, r: BatchResult): ReadOutcome;
}

const same = (props: Record<string, unknown>): ReadOutcome => ({ gone: false, props });

const fileObserver: Observer = {
    script(p, props) {
        // a secret file's content (and its hash) never leaves the host: only its hash is compared, here
        return fileObserveScript(p.path, isSecret(props.content) ? undefined : sha256(p.content));
    },
    judge(p, props, r) {
        const o = parseFileObservation(r.out);
        const d = fileDifferences({ mode: p.mode, owner: p.owner, group: p.group, sha256: sha256(p.content) }, o);
        if (d.missing || o.missing) return { gone: true, why: `${p.path} is missing` };
        const out = { ...props };
        if (d.mode) out.mode = d.mode;
        if (d.owner) out.owner = d.owner;
        if (d.group) out.group = d.group;
        if (d.content) {
            if (isSecret(props.content)) out.content = secret("(differs on the host: secret, compared by hash only)");
            else {
                out.content = o.content ?? `(differs on the host: larger than 1 MiB, not shown; sha256 ${o.sha256})`;
                out.sha256 = o.sha256;
            }
        }
        return same(out);
    },
};

const packagesObserver: Observer = {
    script: (p) => packagesObserveScript(p.packages),
    judge(p, props, r) {
        const missing = new Set(packagesNotInstalled(p.packages, r.out).map((m) => m.name));
        return same(missing.size ? { ...props, packages: p.packages.filter((x: string) => !missing.has(x)) } : props);
    },
};

const scriptObserver: Observer = {
    script: (p) => (p.probe ? p.probe : undefined),
    judge(p, props, r) {
        const out = { ...props };
        delete out.drift;
        if (p.probe && r.rc !== 0) out.drift = r.out.trim().split("\n").pop() || `probe failed (exit ${r.rc})`;
        return same(out);
    },
};

const observers: Record<string, Observer> = {
    "mailinfra:host:File": fileObserver,
    "mailinfra:host:Packages": packagesObserver,
    "mailinfra:host:Script": scriptObserver,
};

// ---------------------------------------------------------------------------------------------
// Per-host batching: reads arriving within BATCH_QUIET_MS of each other share one remote script.
// ---------------------------------------------------------------------------------------------
const BATCH_QUIET_MS = 4;
const BATCH_MAX_WAIT_MS = 40;

interface Pending {
    item: BatchItem;
    /** No install id recorded for the resource (state of an older provider): the read may create one. */
    legacy: boolean;
    resolve(v: { installId: string; result: BatchResult }): void;
    reject(e: Error): void;
}

class HostBatch {
    private pending: Pending[] = [];
    private timer?: NodeJS.Timeout;
    private firstAt = 0;
    constructor(private readonly conn: Connection) {}

    add(script: string, legacy: boolean): Promise<{ installId: string; result: BatchResult }> {
        return new Promise((resolve, reject) => {
            if (!this.pending.length) this.firstAt = Date.now();
            this.pending.push({ item: { key: String(this.pending.length), script }, legacy, resolve, reject });
            if (this.timer) clearTimeout(this.timer);
            const wait = Math.max(0, Math.min(BATCH_QUIET_MS, this.firstAt + BATCH_MAX_WAIT_MS - Date.now()));
            this.timer = setTimeout(() => void this.flush(), wait);
        });
    }

    private async flush(): Promise<void> {
        const batch = this.pending;
        this.pending = [];
        this.timer = undefined;
        const items = batch.map((b) => b.item);
        const marker = batchMarker();
        const local = this.conn.host === "local";
        const id = batch.some((b) => b.legacy) ? ensureInstallIdScript() : `cat ${INSTALL_ID_FILE} 2>/dev/null || true\n`;
        const script = batchScript(items, marker, local ? "" : `echo "${marker} install-id $(${id.trim().replace(/\n/g, "; ")})"`);
        try {
            const r = await sessionFor(this.conn).run(script);
            const { preamble, results } = parseBatch(items, marker, r.stdout);
            const installId = preamble.match(new RegExp(`${marker} install-id (\\S*)`))?.[1] ?? "";
            for (const b of batch) {
                const result = results.get(b.item.key);
                if (!result) b.reject(new Error(`reading from ${this.conn.host} failed (exit ${r.code}): ${r.stderr.trim().slice(-2000)}`));
                else b.resolve({ installId, result });
            }
        } catch (e) {
            for (const b of batch) b.reject(e as Error);
        }
    }
}

const batches = new Map<string, HostBatch>();
const keyOf = (c: Connection) => `${c.user ?? "root"}@${c.host}:${c.port ?? 22}`;

function batchFor(conn: Connection): HostBatch {
    let b = batches.get(keyOf(conn));
    if (!b) batches.set(keyOf(conn), (b = new HostBatch(conn)));
    return b;
}

/**
 * Observes one resource. "gone" when the host was re-imaged (its install id is not the one recorded at
 * create, so every resource of it is re-created in dependency order) or a managed file is missing; otherwise
 * the props with what was observed in place of the declared values (content, mode, owner, packages, drift).
 */
/** `connection`: the one to observe through (the stack's current host key pins); default: the one in props. */
export async function readResource(type: string, props: Record<string, any>, connection?: Connection): Promise<ReadOutcome> {
    const observer = observers[type];
    if (!observer) throw new Error(`mailinfra provider: cannot read ${type}`);
    const p = unwrapSecrets(props);
    const conn: Connection = connection ?? p.connection;
    const base = Object.fromEntries(Object.entries(props).filter(([k]) => !LEGACY_OUTPUTS.includes(k)));
    const script = observer.script(p, props) ?? "true";
    const recorded: string | undefined = p.installId || undefined;
    const { installId, result } = await batchFor(conn).add(script, !recorded);
    if (conn.host !== "local") {
        if (recorded && installId !== recorded)
            return { gone: true, why: `${conn.host} was re-imaged (${INSTALL_ID_FILE} is ${installId ? `${installId}, not ${recorded}` : "missing"})` };
        if (installId) base.installId = installId;
    }
    return observer.judge(p, base, result);
}

/** Fields of `connection` that identify the target host; key material may rotate freely. */
function hostIdentity(props: any) {
    const c = unwrapSecrets(props?.connection) ?? {};
    return { host: c.host, port: c.port ?? 22, user: c.user ?? "root" };
}

/**
 * The properties diff() reports as changed between the state (outputs, or what read() observed) and the
 * program's inputs. Outputs recorded in state (sha256, stdout, installId) are not inputs; a Script's `drift`
 * (only ever set by read) is a change.
 */
export function changedKeys(olds: any, news: any): Set<string> {
    const changed = new Set<string>();
    for (const k of new Set([...Object.keys(olds ?? {}), ...Object.keys(news ?? {})])) {
        if (k === "connection") {
            if (!isDeepStrictEqual(hostIdentity(olds), hostIdentity(news))) changed.add(k);
        } else if (!isDeepStrictEqual(unwrapSecrets(olds?.[k]), unwrapSecrets(news?.[k]))) {
            if (k in (news ?? {}) || ![...OUTPUT_ONLY, ...LEGACY_OUTPUTS].includes(k)) changed.add(k);
        }
    }
    return changed;
}

/** The inputs that would produce these props: everything but the outputs (a Script's `drift` stays, to show it). */
export function inputsOf(props: Record<string, unknown>): Record<string, unknown> {
    return Object.fromEntries(Object.entries(props).filter(([k]) => !OUTPUT_ONLY.includes(k)));
}

// ---------------------------------------------------------------------------------------------
// Install ids recorded by create/update (once per host per provider process).
// ---------------------------------------------------------------------------------------------
const installIds = new Map<string, Promise<string>>();

/** The host's install id, created on its first converge; undefined for the machine running Pulumi. */
export async function installIdOf(conn: Connection): Promise<string | undefined> {
    if (conn.host === "local") return undefined;
    let id = installIds.get(keyOf(conn));
    if (!id) {
        id = sessionFor(conn)
            .run(ensureInstallIdScript())
            .then((r) => {
                if (r.code !== 0 || !r.stdout.trim()) throw new Error(`cannot record the install id of ${conn.host}: ${r.stderr.trim()}`);
                return r.stdout.trim();
            });
        id.catch(() => installIds.delete(keyOf(conn)));
        installIds.set(keyOf(conn), id);
    }
    return id;
}
