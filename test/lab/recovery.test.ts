// Killed runs recover unattended (issue 13 items 3 and 4): the Pulumi CLI is SIGKILLed during package installs
// on bare hosts, during file writes and during the smoke mail; each time `scripts/converge lab` alone then
// succeeds. Its three exit codes: 0 nothing drifted, 2 repaired (listed), 1 failed. Chained on one fleet.
import { ChildProcess, spawn, spawnSync } from "child_process";
import * as fs from "fs";
import * as path from "path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freshLab, FLEET, LAB_CACHE, projectCopy, REPO, run, Run, ssh, waitFor } from "./harness";

const ADDRESS: Record<string, string> = Object.fromEntries(
    fs
        .readFileSync(path.join(REPO, "lab", "hosts"), "utf8")
        .split("\n")
        .filter((l) => l.trim() && !l.startsWith("#"))
        .map((l) => l.trim().split(/\s+/).slice(0, 2) as [string, string]),
);
const HOSTS = FLEET.map((h) => ADDRESS[h]);
const RELAY = ADDRESS.mchenry;
const ENV = { PULUMI_BACKEND_URL: `file://${REPO}/.pulumi-state`, PULUMI_HOME: `${REPO}/.pulumi-home` };
const report: string[] = [];
const copies: string[] = [];
/** Processes of killed runs outside their process group (the engine starts plugins in groups of their own). */
const strays: { pid: number; start: string }[] = [];

function note(line: string) {
    report.push(line);
    console.log(`[recovery] ${line}`);
}

function converge(cwd = REPO): Run & { seconds: number } {
    const t = Date.now();
    const r = run(path.join(cwd, "scripts", "converge"), ["lab"], { cwd, env: ENV });
    return { ...r, seconds: (Date.now() - t) / 1000 };
}
const latestLog = (cwd = REPO) => fs.readFileSync(path.join(cwd, "logs", "converge", "lab-latest.log"), "utf8");
/** The summary line (stdout); the converge's warnings on stderr also start with "converge lab:" but name no log. */
const summaryOf = (r: Run) => r.out.split("\n").find((l) => l.startsWith("converge lab: ") && l.includes("; log ")) ?? r.out.slice(-2000);

/** A run we will kill: its own process group, output collected. */
function startRun(cmd: string, args: string[], cwd = REPO): { child: ChildProcess; out: () => string } {
    let out = "";
    const child = spawn(cmd, args, { cwd, env: { ...process.env, ...ENV }, detached: true, stdio: ["ignore", "pipe", "pipe"] });
    child.stdout!.on("data", (d) => (out += d));
    child.stderr!.on("data", (d) => (out += d));
    return { child, out: () => out };
}

function procStart(pid: number): string | undefined {
    try {
        const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
        return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19];
    } catch {
        return undefined;
    }
}

function descendants(root: number): number[] {
    const children = new Map<number, number[]>();
    for (const d of fs.readdirSync("/proc").filter((d) => /^\d+$/.test(d))) {
        try {
            const stat = fs.readFileSync(`/proc/${d}/stat`, "utf8");
            const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
            children.set(ppid, [...(children.get(ppid) ?? []), Number(d)]);
        } catch {
            // gone meanwhile
        }
    }
    const all: number[] = [];
    const walk = (p: number) => (children.get(p) ?? []).forEach((c) => (all.push(c), walk(c)));
    walk(root);
    return all;
}

/** SIGKILL to the process group we started (the CLI and what shares its group), as a CI timeout or OOM kill would. */
async function killRun(r: { child: ChildProcess }, what: string): Promise<void> {
    const pid = r.child.pid!;
    for (const d of descendants(pid)) strays.push({ pid: d, start: procStart(d) ?? "" });
    if (r.child.exitCode !== null) throw new Error(`${what}: the run ended (exit ${r.child.exitCode}) before it could be killed`);
    process.kill(-pid, "SIGKILL");
    // "exit", not "close": an orphaned plugin may still hold the pipes
    await new Promise((res) => (r.child.exitCode !== null || r.child.signalCode !== null ? res(null) : r.child.once("exit", res)));
    note(`${what}: SIGKILLed process group ${pid}`);
}

function anyHost(cmd: string): string[] {
    return FLEET.filter((h) => ssh(ADDRESS[h], cmd).out.trim() === "yes");
}

function pendingOperations(): number {
    const r = spawnSync(path.join(REPO, "scripts", "pulumi"), ["stack", "export", "--stack", "lab"], { cwd: REPO, env: { ...process.env, ...ENV }, encoding: "utf8", maxBuffer: 256 << 20 });
    return (JSON.parse(r.stdout).deployment.pending_operations ?? []).length;
}

function stackLocks(): string[] {
    const dir = path.join(REPO, ".pulumi-state", ".pulumi", "locks", "organization", "mailinfra", "lab");
    return fs.existsSync(dir) ? fs.readdirSync(dir) : [];
}

/** What the hosts' journals say about waiting for an earlier run's step or for the package lock. */
function waitLines(since: string): string[] {
    return FLEET.flatMap((h) =>
        ssh(ADDRESS[h], `journalctl -q -t mailinfra --since '${since}' -o cat 2>/dev/null | grep -iE 'waiting|has ended' | head -n 3`)
            .out.trim()
            .split("\n")
            .filter(Boolean)
            .map((l) => `${h}: ${l}`),
    );
}
const journalNow = () => new Date().toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");

describe("interrupted runs recover unattended with scripts/converge", () => {
    beforeAll(() => {
        // bare hosts and an empty stack: the first kill lands in the package installs
        freshLab(FLEET);
    });
    afterAll(() => {
        for (const dir of copies) fs.rmSync(dir, { recursive: true, force: true });
        // the fleet as declared for the next test file (undoes whatever a failed case left)
        const r = converge();
        note(`afterAll: ${summaryOf(r)} (exit ${r.code})`);
        // a killed run's provider exits by itself once its in-flight steps end (provider/orphan.ts); report anything left
        const left = strays.filter((s) => s.start && procStart(s.pid) === s.start);
        if (left.length) note(`processes of killed runs still alive: ${left.map((s) => s.pid).join(", ")} (ended now)`);
        for (const s of left) process.kill(s.pid, "SIGKILL");
        console.log(`[recovery] summary\n  ${report.join("\n  ")}`);
    });

    it("after a SIGKILL during package installs on bare hosts, converge clears the stale lock and the interrupted creates, waits for the earlier apt-get and converges (exit 2)", async () => {
        const killed = startRun(path.join(REPO, "scripts", "pulumi"), ["up", "--stack", "lab", "--yes", "--skip-preview", "--non-interactive", "--color=never"]);
        const t0 = Date.now();
        const installing = waitFor(() => anyHost("pgrep -x apt-get >/dev/null && echo yes").length > 0, 180_000, 1000);
        expect(installing, killed.out().slice(-3000)).toBe(true);
        await new Promise((r) => setTimeout(r, 3000));
        const since = journalNow();
        await killRun(killed, `package installs, ${((Date.now() - t0) / 1000).toFixed(0)} s into the run`);
        note(`package installs: apt-get of the killed run still running on ${anyHost("pgrep -x apt-get >/dev/null && echo yes").join(", ") || "no host"}; stack locks ${stackLocks().length}, pending operations ${pendingOperations()}`);

        const r = converge();
        note(`package installs: ${summaryOf(r)} (exit ${r.code}, ${r.seconds.toFixed(0)} s)`);
        expect(r.code, r.out.slice(-4000)).toBe(2);
        expect(r.out).toContain("warning: cleared the stale stack lock");
        expect(r.out).toMatch(/interrupted with \d+ operation\(s\) in flight/);
        expect(summaryOf(r)).toMatch(/repaired \d+ resource\(s\)/);
        expect(latestLog()).toMatch(/changed:\n(  .*\n)*  create \w+:packages\n/);
        expect(pendingOperations()).toBe(0);
        expect(stackLocks()).toEqual([]);
        const waits = waitLines(since);
        note(`package installs: waits logged on the hosts: ${waits.length ? waits.join(" | ") : "none"}`);
        expect(waits.length).toBeGreaterThan(0);
    });

    it("after a SIGKILL during file writes of a changed program, converge puts every host back to this checkout's files (exit 2)", async () => {
        const copy = projectCopy();
        copies.push(copy);
        const token = `recovery-test-${Date.now()}`;
        const common = path.join(copy, "files", "shared", "exim4", "main-common.ejs");
        fs.writeFileSync(common, fs.readFileSync(common, "utf8").replace("\n", `\n# ${token}\n`));
        const marked = `grep -q '${token}' /etc/exim4/exim4.conf && echo yes`;
        const killed = startRun(path.join(copy, "scripts", "pulumi"), ["up", "--stack", "lab", "--yes", "--skip-preview", "--non-interactive", "--color=never"], copy);
        const writing = waitFor(() => anyHost(marked).length > 0, 180_000, 300);
        expect(writing, killed.out().slice(-3000)).toBe(true);
        await killRun(killed, "file writes");
        note(`file writes: the changed exim4.conf had reached ${anyHost(marked).join(", ")}; pending operations ${pendingOperations()}`);

        const r = converge();
        note(`file writes: ${summaryOf(r)} (exit ${r.code}, ${r.seconds.toFixed(0)} s)`);
        expect(r.code, r.out.slice(-4000)).toBe(2);
        expect(summaryOf(r)).toMatch(/update \w+\/etc\/exim4\/exim4\.conf/);
        expect(anyHost(marked)).toEqual([]);
        expect(pendingOperations()).toBe(0);
    });

    it("after a SIGKILL of the converge itself during the smoke mail, the next converge finds nothing drifted (exit 0)", async () => {
        // the relay logs the smoke message's subject on receipt; the run then waits for it over IMAPS
        const seen = spawn("ssh", ["-F", path.join(LAB_CACHE, "ssh_config"), RELAY, "timeout 300 tail -n0 -F /var/log/exim4/mainlog | grep -m1 -F 'T=\"mailinfra-smoke-'"], { stdio: ["ignore", "pipe", "ignore"] });
        const smoking = new Promise<boolean>((res) => {
            seen.stdout!.once("data", () => res(true));
            seen.on("exit", () => res(false));
        });
        await new Promise((r) => setTimeout(r, 1000));
        const killed = startRun(path.join(REPO, "scripts", "converge"), ["lab"]);
        const received = await smoking;
        seen.kill();
        expect(received, killed.out().slice(-3000)).toBe(true);
        await killRun(killed, "smoke mail");

        const r = converge();
        note(`smoke mail: ${summaryOf(r)} (exit ${r.code}, ${r.seconds.toFixed(0)} s)`);
        expect(r.code, r.out.slice(-4000)).toBe(0);
        expect(summaryOf(r)).toMatch(/converged, nothing drifted \(\d+ unchanged\)/);
        expect(latestLog()).toContain("smoke test passed");
    });

    it("repairs a hand-added alias redirect and lists it (exit 2)", () => {
        const file = "/etc/exim4/aliases/wikimedia.test";
        ssh(RELAY, `echo 'evil: attacker@example.net' >> ${file}`);
        const r = converge();
        note(`alias drift: ${summaryOf(r)} (exit ${r.code}, ${r.seconds.toFixed(0)} s)`);
        const left = ssh(RELAY, `grep -c '^evil:' ${file} || true`).out.trim();
        expect(r.code, r.out.slice(-4000)).toBe(2);
        expect(summaryOf(r)).toContain(`mchenry${file}`);
        expect(left).toBe("0");
    });

    it("fails (exit 1) with the on-host check's verdict when a template is broken, leaving the live config in place", () => {
        const copy = projectCopy();
        copies.push(copy);
        const conf = path.join(copy, "files", "relay", "etc", "exim4", "exim4.conf.ejs");
        fs.writeFileSync(conf, fs.readFileSync(conf, "utf8").replace("CONFDIR = /etc/exim4\n", "CONFDIR = /etc/exim4\nno_such_exim_option = 1\n"));
        const r = converge(copy);
        note(`broken template: ${summaryOf(r)} (exit ${r.code}, ${r.seconds.toFixed(0)} s)`);
        expect(r.code, r.out.slice(-4000)).toBe(1);
        expect(summaryOf(r)).toContain("FAILED");
        expect(latestLog(copy)).toContain("no_such_exim_option");
        expect(ssh(RELAY, "grep -c no_such_exim_option /etc/exim4/exim4.conf || true").out.trim()).toBe("0");
        expect(ssh(RELAY, "systemctl is-active exim4").out.trim()).toBe("active");
    });
});
