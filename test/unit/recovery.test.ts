// Recovery of killed runs: stale-lock judgement, interrupted operations, the converge verdict, and the exact
// host-side scripts (host lock, package-lock wait) run locally with bash.
import { execFileSync, spawn, spawnSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { describe, expect, it } from "vitest";
import { EXIT_CODES, INTERRUPTED_MARK, judgeLock, resolvePending, summarizeEvents, summaryLine, verdict } from "../../lib/converge";
import { hostLocked, HOST_LOCK_GAVE_UP, packagesScript, pkgLockWaitFn } from "../../provider/resources";

const lock = (o: Partial<{ pid: number; hostname: string; timestamp: string }> = {}) => ({ pid: 4242, username: "root", hostname: "build", timestamp: "2026-12-01T20:00:00Z", ...o });
const at = (iso: string) => () => Date.parse(iso);

describe("stack lock of a killed CLI", () => {
    it("is stale when its process no longer exists on this machine", () => {
        expect(judgeLock(lock(), "build", () => undefined)).toMatchObject({ kind: "stale" });
    });
    it("is stale when its pid now belongs to a process started after the lock was written", () => {
        expect(judgeLock(lock(), "build", at("2026-12-01T20:05:00Z"))).toMatchObject({ kind: "stale" });
    });
    it("is live while the process that wrote it runs", () => {
        expect(judgeLock(lock(), "build", at("2026-12-01T19:59:50Z"))).toMatchObject({ kind: "live" });
    });
    it("of another machine is never judged stale, whatever runs here under that pid", () => {
        expect(judgeLock(lock({ hostname: "laptop" }), "build", () => undefined)).toMatchObject({ kind: "foreign" });
    });
});

describe("interrupted operations", () => {
    const file = "urn:pulumi:lab::mailinfra::mailinfra:fleet:MailHost$mailinfra:host:File::mchenry/etc/exim4/exim4.conf";
    const pkgs = "urn:pulumi:lab::mailinfra::mailinfra:fleet:MailHost$mailinfra:host:Packages::sanger:packages";
    const gone = "urn:pulumi:lab::mailinfra::mailinfra:fleet:MailHost$mailinfra:host:File::lily/etc/old";
    const deployment = {
        resources: [
            { urn: file, custom: true, inputs: { path: "/etc/exim4/exim4.conf" }, outputs: { path: "/etc/exim4/exim4.conf", sha256: "a" } },
            { urn: gone, custom: true, inputs: {}, outputs: {} },
        ],
        pending_operations: [
            { type: "updating", resource: { urn: file } },
            { type: "creating", resource: { urn: pkgs } },
            { type: "deleting", resource: { urn: gone } },
        ],
    };

    it("are all dropped; an interrupted update or delete is marked so the next up applies it again", () => {
        const r = resolvePending(structuredClone(deployment), "2026-12-01T20:00:00Z");
        expect(r.deployment.pending_operations).toBeUndefined();
        expect(r.deployment.resources[0].inputs[INTERRUPTED_MARK]).toBe("2026-12-01T20:00:00Z");
        expect(r.deployment.resources[0].outputs[INTERRUPTED_MARK]).toBe("2026-12-01T20:00:00Z");
        expect(r.deployment.resources[0].outputs.sha256).toBe("a");
        expect(r.deployment.resources[1].outputs[INTERRUPTED_MARK]).toBeDefined();
        expect(r.resolved).toEqual([
            "mchenry/etc/exim4/exim4.conf: interrupted while updating; it will be applied again",
            "sanger:packages: interrupted while creating; it will be created again",
            "lily/etc/old: interrupted while deleting; it will be applied again",
        ]);
    });

    it("leave a clean checkpoint untouched", () => {
        const clean = { resources: deployment.resources };
        expect(resolvePending(clean, "x")).toEqual({ deployment: clean, resolved: [] });
    });
});

describe("converge verdict from the engine's events", () => {
    const ev = (o: object) => JSON.stringify(o);
    const out = (op: string, name: string) => ev({ resOutputsEvent: { metadata: { op, urn: `urn:pulumi:lab::mailinfra::mailinfra:fleet:MailHost$mailinfra:host:File::${name}`, type: "mailinfra:host:File" } } });
    const summary = (changes: object) => ev({ summaryEvent: { resourceChanges: changes, durationSeconds: 9 } });

    it("is converged (exit 0) when refresh and up changed nothing", () => {
        const o = summarizeEvents([out("refresh", "mchenry/etc/a"), out("same", "mchenry/etc/a"), summary({ same: 142 })].join("\n"));
        expect(verdict(0, o)).toBe("converged");
        expect(EXIT_CODES[verdict(0, o)]).toBe(0);
        expect(summaryLine("lab", "converged", o, 9.4, [], "/l")).toBe("converge lab: converged, nothing drifted (142 unchanged) in 9 s; log /l");
    });

    it("is repaired (exit 2) with the list of changed resources", () => {
        const component = ev({ resOutputsEvent: { metadata: { op: "create", urn: "urn:pulumi:lab::mailinfra::mailinfra:fleet:MailHost::sanger", new: { custom: false } } } });
        const o = summarizeEvents([out("refresh", "mchenry/etc/a"), out("update", "mchenry/etc/a"), component, out("create", "sanger:packages"), "{cut-off", summary({ same: 140, update: 1, create: 2 })].join("\n"));
        expect(verdict(0, o)).toBe("repaired");
        expect(EXIT_CODES.repaired).toBe(2);
        expect(o.changed).toEqual(["update mchenry/etc/a", "create sanger:packages"]);
        expect(summaryLine("lab", "repaired", o, 30, ["resolved 1 interrupted operation(s)"], "/l")).toBe(
            "converge lab: repaired 2 resource(s) in 30 s: update mchenry/etc/a, create sanger:packages; resolved 1 interrupted operation(s); log /l",
        );
    });

    it("lists at most 20 resources in the one-line summary", () => {
        const o = summarizeEvents([...Array.from({ length: 25 }, (_, i) => out("create", `h/f${i}`)), summary({ create: 25 })].join("\n"));
        expect(summaryLine("lab", verdict(0, o), o, 1, [], "/l")).toContain("create h/f19 and 5 more (listed in the log)");
    });

    it("is failed (exit 1) on an error diagnostic, a non-zero exit, or no summary at all (a killed CLI)", () => {
        const failed = summarizeEvents([ev({ diagnosticEvent: { severity: "error", message: "error: \n  writing /etc/exim4/exim4.conf on 198.51.100.11 failed (exit 65)\n" } }), summary({ same: 1 })].join("\n"));
        expect(verdict(0, failed)).toBe("failed");
        expect(summaryLine("lab", "failed", failed, 5, [], "/l")).toContain("FAILED after 5 s: writing /etc/exim4/exim4.conf on 198.51.100.11 failed (exit 65)");
        expect(verdict(1, summarizeEvents(summary({ same: 1 })))).toBe("failed");
        expect(verdict(0, summarizeEvents(out("update", "x")))).toBe("failed");
        expect(EXIT_CODES.failed).toBe(1);
    });
});

const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), "mailinfra-recovery-"));
const bash = (script: string, input?: string) => spawnSync("bash", ["-euo", "pipefail", "-c", script], { input, encoding: "utf8" });

describe("host-side lock around a step", () => {
    const urn = "urn:pulumi:lab::mailinfra::mailinfra:fleet:MailHost$mailinfra:host:Script::mchenry:step:push";

    it("makes the same step of a new run wait until the earlier run's step has ended, then run", async () => {
        const dir = tmp();
        const order = path.join(dir, "order");
        const earlier = spawn("bash", ["-euo", "pipefail", "-c", hostLocked(urn, `echo earlier-start >> ${order}\nsleep 2\necho earlier-end >> ${order}`, { dir, stepS: 1 })]);
        const ended = new Promise((r) => earlier.on("close", r));
        while (!fs.existsSync(order)) await new Promise((r) => setTimeout(r, 50));
        const r = bash(hostLocked(urn, `echo new >> ${order}`, { dir, stepS: 1 }));
        await ended;
        expect(r.status).toBe(0);
        expect(fs.readFileSync(order, "utf8")).toBe("earlier-start\nearlier-end\nnew\n");
        expect(r.stderr).toContain("mchenry:step:push: the same step of an earlier run is still running on this host; waiting for it");
        expect(r.stderr).toContain("the earlier run's step has ended; running it now");
    });

    it("gives up after its bound with a clear message, never running beside the earlier step", () => {
        const dir = tmp();
        const holder = spawn("bash", ["-c", hostLocked(urn, "sleep 5", { dir })]);
        try {
            execFileSync("sleep", ["0.3"]);
            const r = bash(hostLocked(urn, "echo ran", { dir, waitS: 1, stepS: 1 }));
            expect(r.status).toBe(HOST_LOCK_GAVE_UP);
            expect(r.stdout).not.toContain("ran");
            expect(r.stderr).toContain("gave up after 1 s");
        } finally {
            holder.kill();
        }
    });

    it("never lets an older run apply a step after a newer run applied it (a killed run's queued step)", () => {
        const dir = tmp();
        expect(bash(hostLocked(urn, "echo newer", { dir, runStartedMs: 2000 }))).toMatchObject({ status: 0, stdout: "newer\n" });
        const older = bash(hostLocked(urn, "echo older", { dir, runStartedMs: 1000 }));
        expect(older.status).toBe(HOST_LOCK_GAVE_UP);
        expect(older.stdout).toBe("");
        expect(older.stderr).toContain("a newer run (started 2000) has applied this step since this run (started 1000) began");
        expect(bash(hostLocked(urn, "echo again", { dir, runStartedMs: 2000 })).stdout).toBe("again\n");
        expect(bash(hostLocked(urn, "echo next", { dir, runStartedMs: 3000 })).stdout).toBe("next\n");
    });

    it("keeps the step's stdin, exit code and traps, and does not hand the lock to what the step starts", () => {
        const dir = tmp();
        expect(bash(hostLocked(urn, `read -r x; [ "$x" = content ]; trap 'echo trapped' EXIT; exit 3`, { dir }), "content\n")).toMatchObject({ status: 3, stdout: "trapped\n" });
        // a daemon the step leaves behind must not keep the step locked
        const daemonScript = `setsid sleep 5 >/dev/null 2>&1 < /dev/null &\necho started`;
        expect(bash(hostLocked(urn, daemonScript, { dir })).status).toBe(0);
        const again = bash(hostLocked(urn, "echo again", { dir, waitS: 1, stepS: 1 }));
        expect(again).toMatchObject({ status: 0, stdout: "again\n" });
    });
});

describe("package installs wait for a dpkg/apt lock held by an earlier run", () => {
    it("retry while the lock is held, with progress lines, then run", () => {
        const dir = tmp();
        const fake = `n=$(cat ${dir}/n 2>/dev/null || echo 0); echo $((n+1)) > ${dir}/n; if [ $n -lt 2 ]; then echo "E: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 300 (apt-get)"; exit 100; fi; echo installed`;
        const r = bash(`${pkgLockWaitFn(30, 0.1)}\nmailinfra_pkg_locked bash -c '${fake}'`);
        expect(r.status).toBe(0);
        expect(r.stdout).toBe("installed\n");
        expect(r.stderr.match(/waiting for the package lock/g)).toHaveLength(2);
        expect(r.stderr).toContain("It is held by process 300 (apt-get)");
    });

    it("give up after the bound, and fail at once on any other error", () => {
        const held = bash(`${pkgLockWaitFn(1, 0.2)}\nmailinfra_pkg_locked bash -c 'echo "dpkg: error: dpkg frontend lock was locked by another process with pid 300"; exit 2'`);
        expect(held.status).not.toBe(0);
        expect(held.stderr).toContain("gave up after 1 s waiting for the package lock");
        const broken = bash(`${pkgLockWaitFn(30, 0.2)}\nmailinfra_pkg_locked bash -c 'echo "E: Unable to locate package nosuch"; exit 100'`);
        expect(broken.status).not.toBe(0);
        expect(broken.stderr).toBe("E: Unable to locate package nosuch\n");
    });

    it("the package script bounds apt-get's own lock wait and guards dpkg --configure -a and apt-get update", () => {
        const s = packagesScript({ connection: { host: "x" }, packages: ["exim4-daemon-heavy"] });
        expect(s).toContain("-o DPkg::Lock::Timeout=900");
        expect(s).toContain("mailinfra_pkg_locked dpkg --configure -a");
        expect(s).toContain("mailinfra_pkg_locked timeout 60 apt-get $apt_opts update");
        expect(bash(`set -n\n${s}`).status).toBe(0);
    });
});
