// Unattended converge of one stack, run by scripts/converge while it holds the machine-local converge lock.
// Recovers what a killed CLI left behind (a stale stack lock, interrupted operations), then
// `pulumi up --refresh --yes --skip-preview`; writes a log and prints a one-line summary. Exit codes: lib/converge.ts
// EXIT_CODES (0 converged, nothing drifted; 2 repaired, listed; 1 failed), documented in docs/ops.md.
import { spawn, spawnSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { EXIT_CODES, judgeLock, PulumiLock, resolvePending, summarizeEvents, summaryLine, verdict } from "../lib/converge";

const repo = path.resolve(__dirname, "..");
const pulumiBin = path.join(repo, "scripts", "pulumi");
const stack = process.argv[2] ?? "";
const startedAt = Date.now();
const stamp = new Date(startedAt).toISOString().replace(/[-:]/g, "").replace(/\.\d+Z$/, "Z");
const logDir = process.env.MAILINFRA_CONVERGE_LOG_DIR ?? path.join(repo, "logs", "converge");
const logFile = path.join(logDir, `${stack}-${stamp}.log`);
/** How long to wait for a live `pulumi` of this machine that holds the stack lock (a hand-run `up`). */
const liveLockWaitS = Number(process.env.MAILINFRA_CONVERGE_LOCK_WAIT ?? 3600);
const notes: string[] = [];

function log(line: string): void {
    fs.appendFileSync(logFile, `${new Date().toISOString()} ${line}\n`);
}
function say(line: string): void {
    log(line);
    console.error(`converge ${stack}: ${line}`);
}

/** The CLI with this project's wrapper; its output goes to the log. */
function pulumi(args: string[], input?: string): { code: number; stdout: string; error: string } {
    const r = spawnSync(pulumiBin, [...args, "--stack", stack, "--non-interactive"], { cwd: repo, input, encoding: "utf8", maxBuffer: 512 << 20 });
    log(`$ pulumi ${args.join(" ")} (exit ${r.status})${r.stderr ? `\n${r.stderr.trimEnd()}` : ""}`);
    const error = (r.stderr ?? "").trim().split("\n").filter((l) => /error/i.test(l)).pop() ?? `exit ${r.status}`;
    return { code: r.status ?? 1, stdout: r.stdout ?? "", error };
}

function backendDir(): string | undefined {
    const url = process.env.PULUMI_BACKEND_URL ?? `file://${repo}/.pulumi-state`;
    return url.startsWith("file://") ? url.slice("file://".length) : undefined;
}

function projectName(): string {
    const m = /^name:\s*(\S+)/m.exec(fs.readFileSync(path.join(repo, "Pulumi.yaml"), "utf8"));
    if (!m) throw new Error("Pulumi.yaml has no project name");
    return m[1];
}

/** Start time (epoch ms) of a process of this machine, from /proc; undefined when there is none. */
function processStartMs(pid: number): number | undefined {
    try {
        const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
        const ticks = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19]);
        const boot = Number(/^btime (\d+)$/m.exec(fs.readFileSync("/proc/stat", "utf8"))![1]);
        return boot * 1000 + (ticks * 1000) / 100; // USER_HZ is 100 on Linux
    } catch {
        return undefined;
    }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Stale locks (a killed CLI of this machine) are cleared with a warning; a live one is waited for (bounded);
 *  another machine's is never touched. Only the file backend keeps locks as files. */
async function clearStaleLocks(): Promise<void> {
    const dir = backendDir();
    if (!dir) return;
    const lockDir = path.join(dir, ".pulumi", "locks", "organization", projectName(), stack);
    const deadline = Date.now() + liveLockWaitS * 1000;
    let lastSaid = 0;
    for (;;) {
        const files = fs.existsSync(lockDir) ? fs.readdirSync(lockDir).filter((f) => f.endsWith(".json")) : [];
        const live: string[] = [];
        for (const f of files) {
            const file = path.join(lockDir, f);
            let lock: PulumiLock;
            try {
                lock = JSON.parse(fs.readFileSync(file, "utf8"));
            } catch (e) {
                throw new Error(`cannot read the stack lock ${file}: ${(e as Error).message}; not touching it`);
            }
            const v = judgeLock(lock, os.hostname(), processStartMs);
            if (v.kind === "foreign") throw new Error(`the stack is locked by ${file}, ${v.reason}`);
            if (v.kind === "live") {
                live.push(`${file} ${v.reason}`);
                continue;
            }
            fs.rmSync(file);
            fs.rmSync(`${file}.attrs`, { force: true }); // the file backend's metadata sidecar
            say(`warning: cleared the stale stack lock ${file}, ${v.reason}`);
            notes.push(`cleared a stale stack lock of pid ${lock.pid}`);
        }
        if (!live.length) return;
        if (Date.now() > deadline) throw new Error(`the stack is still locked after ${liveLockWaitS} s: ${live.join("; ")}`);
        if (Date.now() - lastSaid > 30_000) {
            say(`waiting for a running pulumi (at most ${liveLockWaitS} s): ${live.join("; ")}`);
            lastSaid = Date.now();
        }
        await sleep(2000);
    }
}

/** Interrupted operations of a killed CLI: the export is saved (0600) next to the log, then re-imported without them. */
function resolveInterruptedOperations(): void {
    const exp = pulumi(["stack", "export"]);
    if (exp.code !== 0) throw new Error(`pulumi stack export failed: ${exp.error}`);
    const state = JSON.parse(exp.stdout);
    const { deployment, resolved } = resolvePending(state.deployment, new Date(startedAt).toISOString());
    if (!resolved.length) return;
    const backup = path.join(logDir, `${stack}-${stamp}.before-recovery.json`);
    fs.writeFileSync(backup, exp.stdout, { mode: 0o600 });
    say(`warning: the previous run was interrupted with ${resolved.length} operation(s) in flight (state saved to ${backup}):\n  ${resolved.join("\n  ")}`);
    const fixed = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "mailinfra-converge-")), "state.json");
    fs.writeFileSync(fixed, JSON.stringify({ ...state, deployment }), { mode: 0o600 });
    try {
        const imp = pulumi(["stack", "import", "--file", fixed]);
        if (imp.code !== 0) throw new Error(`pulumi stack import failed: ${imp.error}; the previous state is in ${backup}`);
    } finally {
        fs.rmSync(path.dirname(fixed), { recursive: true, force: true });
    }
    notes.push(`resolved ${resolved.length} interrupted operation(s)`);
}

/** `pulumi up --refresh`, its output streamed into the log, its engine events into a file we read afterwards. */
function up(eventLog: string): Promise<number> {
    return new Promise((resolve) => {
        const args = ["up", "--stack", stack, "--refresh", "--yes", "--skip-preview", "--non-interactive", "--color=never", "--event-log", eventLog];
        log(`$ pulumi ${args.join(" ")}`);
        const out = fs.openSync(logFile, "a");
        // --event-log exists only with PULUMI_DEBUG_COMMANDS (the Automation API sets it for the same flag)
        const child = spawn(pulumiBin, args, { cwd: repo, stdio: ["ignore", out, out], env: { ...process.env, PULUMI_DEBUG_COMMANDS: "true" } });
        child.on("error", () => resolve(1));
        child.on("close", (code) => {
            fs.closeSync(out);
            resolve(code ?? 1);
        });
    });
}

function pointLatest(): void {
    const latest = path.join(logDir, `${stack}-latest.log`);
    fs.rmSync(latest, { force: true });
    fs.symlinkSync(path.basename(logFile), latest);
}

/** Keeps the newest 200 logs of the stack. */
function pruneLogs(): void {
    const mine = fs.readdirSync(logDir).filter((f) => f.startsWith(`${stack}-2`)).sort();
    for (const f of mine.slice(0, Math.max(0, mine.length - 200))) fs.rmSync(path.join(logDir, f), { force: true });
}

async function main(): Promise<number> {
    if (!/^[A-Za-z0-9._-]+$/.test(stack)) {
        console.error("usage: scripts/converge STACK");
        return EXIT_CODES.failed;
    }
    fs.mkdirSync(logDir, { recursive: true, mode: 0o750 });
    fs.writeFileSync(logFile, "", { mode: 0o640 });
    pointLatest();
    log(`converge of stack ${stack} on ${os.hostname()} (pid ${process.pid}), checkout ${repo}`);
    const eventDir = fs.mkdtempSync(path.join(os.tmpdir(), "mailinfra-events-"));
    const eventLog = path.join(eventDir, "events.jsonl");
    try {
        await clearStaleLocks();
        resolveInterruptedOperations();
        const code = await up(eventLog);
        const outcome = summarizeEvents(fs.existsSync(eventLog) ? fs.readFileSync(eventLog, "utf8") : "");
        const result = verdict(code, outcome);
        if (outcome.changed.length) log(`changed:\n  ${outcome.changed.join("\n  ")}`);
        const line = summaryLine(stack, result, outcome, (Date.now() - startedAt) / 1000, notes, logFile);
        log(line);
        console.log(line);
        return EXIT_CODES[result];
    } catch (e) {
        const line = `converge ${stack}: FAILED after ${((Date.now() - startedAt) / 1000).toFixed(0)} s: ${(e as Error).message}; log ${logFile}`;
        log(line);
        console.log(line);
        return EXIT_CODES.failed;
    } finally {
        fs.rmSync(eventDir, { recursive: true, force: true });
        pruneLogs();
    }
}

// exitCode, not exit(): the summary line must reach a piped stdout (cron, CI) before the process ends
main().then((code) => (process.exitCode = code));
