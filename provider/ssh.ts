// SSH transport of the mailinfra provider: one pooled connection per host for the whole
// `pulumi up`, scripts and file contents always travel on stdin (never on a command line).
import * as crypto from "crypto";
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
    /** Set when the host's `timeout` stopped the step at its deadline: that deadline, in seconds. */
    timedOutAfterS?: number;
}

/** No remote step may block `pulumi up` forever (a hung mirror, a daemon holding the session). */
const SCRIPT_DEADLINE_S = 1800;
/** sshd allows 10 sessions per connection by default; stay below it. */
const MAX_CHANNELS_PER_HOST = 6;
/** Exit code of the bootstrap or the input check when what arrived on stdin is not what was sent. */
export const INCOMPLETE_TRANSFER_EXIT = 66;

/** One step as it travels to the host: a fixed bootstrap on the command line, the script (and its input) on stdin. */
export interface Delivery {
    /** Safe to show in `ps`: sizes and the script's hash only, never anything derived from the input. */
    command: string;
    payload: Buffer;
    /** Bytes of `payload` before the host has every byte it needs to start the step (all of them). */
    bytes: number;
}

/** The script's first line when it has input on stdin: reads exactly the input's bytes (into RAM, /dev/shm: it may
 *  be a secret), checks their length and sha256, and only then gives them to the script as its stdin. The nonce keeps the script's own hash (which is on
 *  the command line) from being a test for guesses of a secret input. */
function inputCheck(input: Buffer): string {
    const bytes = input.length;
    const hash = crypto.createHash("sha256").update(input).digest("hex");
    const nonce = crypto.randomBytes(16).toString("hex");
    return (
        `mailinfra_input=$(mktemp -p /dev/shm 2>/dev/null || mktemp); head -c ${bytes} >"$mailinfra_input" || true; mailinfra_got=$(wc -c <"$mailinfra_input"); ` +
        `if [ "$mailinfra_got" -ne ${bytes} ]; then rm -f "$mailinfra_input"; echo "mailinfra: the input arrived incomplete ($mailinfra_got of ${bytes} bytes): nothing was applied" >&2; exit ${INCOMPLETE_TRANSFER_EXIT}; fi; ` +
        `if [ "$(sha256sum <"$mailinfra_input")" != "${hash}  -" ]; then rm -f "$mailinfra_input"; echo "mailinfra: the input arrived altered (sha256 differs): nothing was applied" >&2; exit ${INCOMPLETE_TRANSFER_EXIT}; fi; ` +
        `exec <"$mailinfra_input"; rm -f "$mailinfra_input"; unset mailinfra_input mailinfra_got # input ${nonce}\n`
    );
}

/** Builds what is sent for one step. The host runs the script only once all of its bytes arrived with the right
 *  sha256, and with stdin from /dev/null, or with the checked input: run as `bash -s`, any command in it that
 *  reads stdin (ssh, for one) would swallow the rest of the script unexecuted. */
export function delivery(script: string, stdin?: string, deadlineS = SCRIPT_DEADLINE_S): Delivery {
    const input = stdin === undefined ? undefined : Buffer.from(stdin, "utf8");
    const body = Buffer.from((input ? inputCheck(input) : "") + script, "utf8");
    const hash = crypto.createHash("sha256").update(body).digest("hex");
    const n = body.length;
    const command =
        `f=$(mktemp) || exit 70; head -c ${n} >"$f"; got=$(wc -c <"$f"); ` +
        `if [ "$got" -ne ${n} ]; then rm -f "$f"; echo "mailinfra: the script arrived incomplete ($got of ${n} bytes): nothing was run" >&2; exit ${INCOMPLETE_TRANSFER_EXIT}; fi; ` +
        `if [ "$(sha256sum <"$f")" != "${hash}  -" ]; then rm -f "$f"; echo "mailinfra: the script arrived altered (sha256 differs): nothing was run" >&2; exit ${INCOMPLETE_TRANSFER_EXIT}; fi; ` +
        `timeout --kill-after=30 ${deadlineS} bash -euo pipefail "$f"${input ? "" : " </dev/null"}; rc=$?; rm -f "$f"; exit $rc`;
    const payload = input ? Buffer.concat([body, input]) : body;
    return { command, payload, bytes: payload.length };
}

/** The host's `timeout` exits 124 (137 after --kill-after); a script may exit 124 itself, but not at its deadline. */
function stoppedAtDeadline(code: number, startedMs: number, deadlineS: number): number | undefined {
    return (code === 124 || code === 137) && Date.now() - startedMs >= deadlineS * 1000 ? deadlineS : undefined;
}

export interface SessionOptions {
    /** Seconds one step may run on the host before `timeout` stops it. */
    deadlineS?: number;
}

/** The step's channel never opened: nothing reached the host. */
class NeverStarted extends Error {}

/** One SSH connection and the commands in flight on it; a new one replaces it once it is lost. */
interface Link {
    ssh: NodeSSH;
    lost?: Error;
    inFlight: Set<(cause: Error) => void>;
}

export class HostSession {
    private ssh?: Promise<NodeSSH>;
    private link?: Link;
    private active = 0;
    private waiting: (() => void)[] = [];
    public commands = 0;
    private readonly deadlineS: number;

    constructor(
        private readonly conn: Connection,
        opts: SessionOptions = {},
    ) {
        this.deadlineS = opts.deadlineS ?? SCRIPT_DEADLINE_S;
    }

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

    private get address(): string {
        return `${this.conn.user ?? "root"}@${this.conn.host}:${this.conn.port ?? 22}`;
    }

    /** The live connection, or a new one when the last was lost: a dropped session never poisons later steps. */
    private async open(what: string): Promise<Link> {
        const pending = this.connect();
        let ssh: NodeSSH;
        try {
            ssh = await pending;
        } catch (e) {
            const msg = (e as Error).message;
            const timedOut = /timed out while waiting for handshake/i.test(msg);
            throw new Error(`${timedOut ? `connecting to ${this.address} timed out (no SSH handshake)` : msg} before ${what}; nothing was applied`);
        }
        if (this.link?.ssh === ssh && !this.link.lost) return this.link;
        if (!ssh.isConnected()) {
            if (this.ssh === pending) this.ssh = undefined;
            return this.open(what);
        }
        const link: Link = { ssh, inFlight: new Set() };
        const lose = (cause: Error) => {
            link.lost ??= cause;
            if (this.ssh === pending) this.ssh = undefined;
            for (const fail of [...link.inFlight]) fail(link.lost);
        };
        // without an 'error' listener an ECONNRESET would be an unhandled event and end the provider
        ssh.connection!.on("error", (err: Error) => lose(err));
        ssh.connection!.on("end", () => lose(new Error("the server closed the connection")));
        ssh.connection!.on("close", () => lose(new Error("the connection closed")));
        this.link = link;
        return link;
    }

    private lostError(what: string, sent: boolean, cause: Error): Error {
        const reason = /keepalive timeout/i.test(cause.message) ? "no answer to SSH keepalives" : cause.message;
        return new Error(
            sent
                ? `connection to ${this.address} lost while ${what} (${reason}), after the host had the whole step: it may have run in part or in full; the next \`pulumi up\` runs it again`
                : `connection to ${this.address} lost while ${what} (${reason}); nothing was applied`,
        );
    }

    /** Runs a bash script as the connection's user; `stdin` (file content, secrets) is checked on the host first. */
    async run(script: string, stdin?: string, what = "running a script"): Promise<ExecResult> {
        await this.acquire();
        try {
            this.commands++;
            const started = Date.now();
            try {
                const d = delivery(script, stdin, this.deadlineS);
                const r = await this.exec(await this.open(what), d, what).catch(async (e) => {
                    // a pooled connection that died while idle: the step never reached the host, so try once anew
                    if (!(e instanceof NeverStarted)) throw e;
                    return this.exec(await this.open(what), d, what);
                });
                return { ...r, timedOutAfterS: stoppedAtDeadline(r.code, started, this.deadlineS) };
            } finally {
                recordCommand(this.conn.host, started);
            }
        } finally {
            this.release();
        }
    }

    private exec(link: Link, d: Delivery, what: string): Promise<ExecResult> {
        return new Promise<ExecResult>((resolve, reject) => {
            const stdout: Buffer[] = [];
            const stderr: Buffer[] = [];
            let channel: any;
            let sent = false;
            let exit: { code?: number | null; signal?: string } = {};
            let settled = false;
            const settle = (f: () => void) => {
                if (settled) return;
                settled = true;
                clearTimeout(noAnswer);
                link.inFlight.delete(lost);
                f();
            };
            const lost = (cause: Error) => settle(() => reject(channel ? this.lostError(what, sent, cause) : new NeverStarted(this.lostError(what, false, cause).message)));
            // the host's `timeout` ends the step first; this only fires when the host stopped answering on the channel
            const noAnswerS = this.deadlineS + 90;
            const noAnswer = setTimeout(() => {
                settle(() => reject(new Error(`${what} on ${this.address}: no answer within ${noAnswerS} s (the step deadline is ${this.deadlineS} s); the channel was closed`)));
                channel?.close();
            }, noAnswerS * 1000);
            if (link.lost) return lost(link.lost);
            link.inFlight.add(lost);
            const notStarted = (err: Error) => settle(() => reject(new NeverStarted(`cannot start ${what} on ${this.address}: ${err.message}; nothing was applied`)));
            try {
                link.ssh.connection!.exec(d.command, onChannel);
            } catch (e) {
                notStarted(e as Error); // "Not connected": the socket went away before the loss was reported
            }
            function onChannel(err: Error | undefined, ch: any) {
                if (err) return notStarted(err);
                channel = ch;
                ch.on("data", (b: Buffer) => stdout.push(b));
                ch.stderr.on("data", (b: Buffer) => stderr.push(b));
                ch.on("exit", (code: number | null, signal?: string) => (exit = { code, signal }));
                ch.on("finish", () => (sent = true));
                ch.on("error", (e: Error) => lost(e));
                ch.on("close", () => {
                    if (exit.code === undefined) return lost(link.lost ?? new Error("the channel closed without an exit status"));
                    const err = Buffer.concat(stderr).toString("utf8").trim();
                    settle(() =>
                        resolve({
                            code: exit.code ?? -1,
                            stdout: Buffer.concat(stdout).toString("utf8").trim(),
                            stderr: exit.signal ? `${err}\n(killed by signal ${exit.signal})`.trim() : err,
                        }),
                    );
                });
                ch.end(d.payload);
            }
        });
    }

    dispose(): void {
        void this.ssh?.then((s) => s.dispose()).catch(() => undefined);
        this.ssh = undefined;
        this.link = undefined;
    }
}

/** The machine running Pulumi itself: same interface and the same bootstrap as over SSH, no SSH. */
export class LocalSession {
    public commands = 0;
    private readonly deadlineS: number;
    constructor(opts: SessionOptions = {}) {
        this.deadlineS = opts.deadlineS ?? SCRIPT_DEADLINE_S;
    }
    async run(script: string, stdin?: string, _what?: string): Promise<ExecResult> {
        this.commands++;
        const started = Date.now();
        const { spawn } = await import("child_process");
        const d = delivery(script, stdin, this.deadlineS);
        return new Promise<ExecResult>((resolve, reject) => {
            const child = spawn("bash", ["-c", d.command], { stdio: ["pipe", "pipe", "pipe"] });
            let stdout = "";
            let stderr = "";
            child.stdout.on("data", (b) => (stdout += b));
            child.stderr.on("data", (b) => (stderr += b));
            // the bootstrap stops reading after the bytes it expects: a short write is its business, not ours
            child.stdin.on("error", () => undefined);
            child.on("error", reject);
            child.on("close", (code) => resolve({ code: code ?? -1, stdout, stderr, timedOutAfterS: stoppedAtDeadline(code ?? -1, started, this.deadlineS) }));
            child.stdin.end(d.payload);
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
    const r = await sessionFor(conn).run(script, stdin, what);
    if (r.timedOutAfterS) throw new Error(`${what} on ${conn.host} timed out: stopped at the step deadline of ${r.timedOutAfterS} s\n${r.stderr.trim()}`.trim());
    if (r.code !== 0) {
        const detail = [r.stderr.trim(), r.stdout.trim()].filter(Boolean).join("\n");
        throw new Error(`${what} on ${conn.host} failed (exit ${r.code}):\n${detail}`);
    }
    return r;
}
