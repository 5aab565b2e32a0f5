// SSH transport of the mailinfra provider: one pooled connection per host for the whole
// `pulumi up`, scripts and file contents always travel on stdin (never on a command line).
import * as fs from "fs";
import { NodeSSH } from "node-ssh";
import { hostKeyCheck } from "../lib/hostKeys";

export interface Connection {
    /** "local" runs on the machine running Pulumi (the lab's DNS files), not over SSH. */
    host: string;
    port?: number;
    user?: string;
    /** Path of a private key on the machine running Pulumi (lab key, operator key). */
    privateKeyPath?: string;
    /** Private key text (a Pulumi secret in stack config). */
    privateKey?: string;
    /** The host's pinned SSH host public keys: any other key is refused before authentication. Required. */
    hostKeys?: string[];
    /** Host name in stack config and the stack, for messages (which pin, how to re-pin). */
    name?: string;
    stack?: string;
}

/** ssh2 options that make a connection accept only the host's pinned keys, and the error explaining a refusal. */
export function pinnedHostOptions(c: Connection) {
    const check = hostKeyCheck({ name: c.name, address: c.host, stack: c.stack, hostKeys: c.hostKeys ?? [] });
    return { options: { hostVerifier: check.verify, algorithms: { serverHostKey: check.algorithms } }, explain: check.explain };
}

export interface ExecResult {
    code: number;
    stdout: string;
    stderr: string;
}

/** sshd allows 10 sessions per connection by default; stay below it. */
/** No remote step may block `pulumi up` forever (a hung mirror, a daemon holding the session). */
const SCRIPT_DEADLINE_S = 1800;
const MAX_CHANNELS_PER_HOST = 6;

class HostSession {
    private ssh?: Promise<NodeSSH>;
    private active = 0;
    private waiting: (() => void)[] = [];
    public commands = 0;

    constructor(private readonly conn: Connection) {}

    private connect(): Promise<NodeSSH> {
        if (!this.ssh) {
            const c = this.conn;
            const privateKey = c.privateKey ?? (c.privateKeyPath ? fs.readFileSync(c.privateKeyPath, "utf8") : undefined);
            const ssh = new NodeSSH();
            let pinned: ReturnType<typeof pinnedHostOptions>;
            try {
                pinned = pinnedHostOptions(c);
            } catch (e) {
                return Promise.reject(e);
            }
            this.ssh = ssh
                .connect({
                    host: c.host,
                    port: c.port ?? 22,
                    username: c.user ?? "root",
                    privateKey,
                    agent: privateKey ? undefined : process.env.SSH_AUTH_SOCK,
                    readyTimeout: 20000,
                    keepaliveInterval: 10000,
                    ...pinned.options,
                })
                .catch((err: Error) => {
                    this.ssh = undefined;
                    throw new Error(`cannot reach ${c.user ?? "root"}@${c.host}:${c.port ?? 22} over SSH: ${pinned.explain(err).message}`);
                });
        }
        return this.ssh;
    }

    private async acquire(): Promise<void> {
        if (this.active < MAX_CHANNELS_PER_HOST) {
            this.active++;
            return;
        }
        await new Promise<void>((resolve) => this.waiting.push(resolve));
        this.active++;
    }

    private release(): void {
        this.active--;
        this.waiting.shift()?.();
    }

    /** Runs a bash script given on stdin, as the connection's user. */
    async run(script: string, stdin?: string): Promise<ExecResult> {
        const ssh = await this.connect();
        await this.acquire();
        try {
            this.commands++;
            const started = Date.now();
            // The script is base64 on the command line only when stdin carries file content;
            // neither ever contains secrets in argv: secrets only travel in `stdin`.
            try {
                if (stdin === undefined) {
                    // The script is saved to a file first and runs with stdin from /dev/null: run as `bash -s`, any
                    // command in it that reads stdin (ssh, for one) would swallow the rest of the script unexecuted.
                    const r = await ssh.execCommand(
                        `f=$(mktemp) && cat >"$f" && timeout --kill-after=30 ${SCRIPT_DEADLINE_S} bash -euo pipefail "$f" </dev/null; rc=$?; rm -f "$f"; exit $rc`,
                        { stdin: script },
                    );
                    return { code: r.code ?? -1, stdout: r.stdout, stderr: r.stderr };
                }
                const encoded = Buffer.from(script, "utf8").toString("base64");
                const r = await ssh.execCommand(`timeout --kill-after=30 ${SCRIPT_DEADLINE_S} bash -euo pipefail -c "$(echo ${encoded} | base64 -d)"`, { stdin });
                return { code: r.code ?? -1, stdout: r.stdout, stderr: r.stderr };
            } finally {
                recordCommand(this.conn.host, started);
            }
        } finally {
            this.release();
        }
    }

    dispose(): void {
        void this.ssh?.then((s) => s.dispose()).catch(() => undefined);
    }
}

/** The machine running Pulumi itself: same interface, no SSH. */
class LocalSession {
    public commands = 0;
    async run(script: string, stdin?: string): Promise<ExecResult> {
        this.commands++;
        const started = Date.now();
        const { spawn } = await import("child_process");
        return new Promise<ExecResult>((resolve, reject) => {
            const args = stdin === undefined ? ["-euo", "pipefail", "-s"] : ["-euo", "pipefail", "-c", script];
            const child = spawn("timeout", ["--kill-after=30", String(SCRIPT_DEADLINE_S), "bash", ...args], { stdio: ["pipe", "pipe", "pipe"] });
            let stdout = "";
            let stderr = "";
            child.stdout.on("data", (d) => (stdout += d));
            child.stderr.on("data", (d) => (stderr += d));
            child.on("error", reject);
            child.on("close", (code) => resolve({ code: code ?? -1, stdout, stderr }));
            child.stdin.end(stdin === undefined ? script : stdin);
        }).finally(() => recordCommand("local", started));
    }
    dispose(): void {}
}

const sessions = new Map<string, HostSession | LocalSession>();

export function sessionFor(conn: Connection): HostSession | LocalSession {
    if (conn.host === "local") {
        let l = sessions.get("local");
        if (!l) sessions.set("local", (l = new LocalSession()));
        return l;
    }
    const key = `${conn.user ?? "root"}@${conn.host}:${conn.port ?? 22}`;
    let s = sessions.get(key);
    if (!s) {
        s = new HostSession(conn);
        sessions.set(key, s);
    }
    return s;
}

/** Benchmarks count remote commands per host and time each host's converge: one line per finished command in
 *  MAILINFRA_STATS_FILE, "host<TAB>start ms<TAB>end ms" (epoch; written as they finish: the engine stops the
 *  provider without a normal exit). */
function recordCommand(host: string, startedMs: number): void {
    const file = process.env.MAILINFRA_STATS_FILE;
    if (file) fs.appendFileSync(file, `${host}\t${startedMs}\t${Date.now()}\n`);
}

export function closeAllSessions(): void {
    for (const s of sessions.values()) s.dispose();
    sessions.clear();
}

/** Runs a script and throws with the script's own output when it fails. */
export async function runChecked(conn: Connection, what: string, script: string, stdin?: string): Promise<ExecResult> {
    const r = await sessionFor(conn).run(script, stdin);
    if (r.code !== 0) {
        const detail = [r.stderr.trim(), r.stdout.trim()].filter(Boolean).join("\n");
        throw new Error(`${what} on ${conn.host} failed (exit ${r.code}):\n${detail}`);
    }
    return r;
}
