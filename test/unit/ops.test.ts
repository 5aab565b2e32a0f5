// Operator commands' pure layer: status verdicts, the drift comparison, the backup plan and its config.
import { describe, expect, it } from "vitest";
import { parseStackConfig } from "../../lib/config";
import { compareHost, expectedHost, Observed, observeScript } from "../../lib/drift";
import { fileObserveScript } from "../../lib/observe";
import { sha256 } from "../../lib/hash";
import { planFleet } from "../../lib/roles";
import { checkCertificate, checkDns, checkPorts, checkProbe, checkTlsVersions, exitCodeOf, expectedDnsRecords, mxHosts, renderTable } from "../../lib/status";
import { labWith, problemsOf, stackConfig } from "./stackConfig";

const lab = () => parseStackConfig(stackConfig("lab"));
const NOW = new Date("2026-11-24T12:00:00Z");
const SECRETS = { smokePassword: "pw", ldapPassword: "ldap-pass-123", otrsDbPassword: "otrs-pass-123", tlsPrivateKey: "KEY", userdbSyncKey: "SYNC", backupKey: "BACKUPKEY", mailmanWebSecret: "MMWEB" };

describe("status verdicts", () => {
    it("warns about a certificate expiring within 14 days and fails an expired one", () => {
        expect(checkCertificate("sanger", 993, new Date("2027-11-24T12:00:00Z"), NOW).verdict).toBe("ok");
        const soon = checkCertificate("sanger", 993, new Date("2026-11-30T12:00:00Z"), NOW);
        expect(soon).toMatchObject({ verdict: "warn", detail: expect.stringMatching(/^expires in 6\.0 days/) });
        expect(checkCertificate("sanger", 993, new Date("2026-11-01T00:00:00Z"), NOW).verdict).toBe("fail");
    });

    it("fails a port that offers TLS 1.0 or 1.1", () => {
        expect(checkTlsVersions("mchenry", 465, ["TLSv1.2", "TLSv1.3"]).verdict).toBe("ok");
        expect(checkTlsVersions("mchenry", 465, ["TLSv1.1", "TLSv1.2"])).toMatchObject({ verdict: "fail", detail: expect.stringContaining("TLSv1.1") });
        expect(checkTlsVersions("mchenry", 465, []).verdict).toBe("fail");
    });

    it("fails a missing listener and a reachable plaintext IMAP port", () => {
        const checks = checkPorts("sanger", "imap", [25, 465, 587], { 25: true, 465: true, 587: true, 993: false, 143: true });
        expect(checks.filter((c) => c.verdict === "fail").map((c) => c.check)).toEqual(["port 993", "port 143"]);
    });

    it("exits 1 on a failure, 2 on warnings only, 0 when all is well, and prints one table row per check", () => {
        const ok = { host: "a", check: "x", verdict: "ok" as const, detail: "" };
        expect(exitCodeOf([ok])).toBe(0);
        expect(exitCodeOf([ok, { ...ok, verdict: "warn" }])).toBe(2);
        expect(exitCodeOf([ok, { ...ok, verdict: "warn" }, { ...ok, verdict: "fail" }])).toBe(1);
        expect(renderTable([ok, { ...ok, check: "y", verdict: "fail", detail: "broken" }])).toMatch(/^HOST +CHECK +STATUS +DETAIL\na +x +OK\na +y +FAIL +broken\n\nFAIL: 1 ok, 0 warn, 1 fail$/);
    });

    it("matches served DNS records against the model and names what is missing or unexpected", () => {
        const expected = expectedDnsRecords(lab());
        const served: Record<string, string[]> = {};
        for (const r of expected) {
            const key = `${r.type} ${r.name}`;
            served[key] = [...(served[key] ?? []), r.type === "MX" ? `${r.priority} ${r.content}` : r.content];
        }
        expect(checkDns(expected, served)[0].verdict).toBe("ok");
        served["A sanger.lab.test"] = ["198.51.100.16"];
        const bad = checkDns(expected, served);
        expect(bad[0].verdict).toBe("fail");
        expect(bad.find((c) => c.check === "A sanger.lab.test")?.detail).toBe("missing 198.51.100.12; unexpected 198.51.100.16");
    });

    it("probes the relay and the secondary MX for open relaying, and judges a 250 as a failure", () => {
        expect(mxHosts(lab())).toEqual(["mchenry", "lily"]);
        expect(checkProbe({ host: "mchenry", probe: "open relay", answer: "250 Accepted", refused: false }).verdict).toBe("fail");
    });
});

describe("drift audit", () => {
    const plan = planFleet(lab()).find((p) => p.host === "mchenry")!;
    const expected = expectedHost(plan, SECRETS);
    const alias = expected.files.find((f) => f.path === "/etc/exim4/aliases/wikimedia.test")!;

    /** What observeScript's items report for a host that is exactly as rendered. */
    function clean(): Observed {
        return new Map([
            ...expected.files.map((f) => [`file ${f.path}`, { rc: 0, out: `present\t${f.owner} ${f.group} ${parseInt(f.mode, 8).toString(8)}\t${f.sha256}` }] as const),
            ["packages", { rc: 0, out: expected.packages.map((p) => `${p}\tii`).join("\n") }] as const,
            ...expected.scripts.map((s) => [`${s.kind} ${s.name}`, { rc: 0, out: "" }] as const),
        ]);
    }
    const withFile = (o: Observed, path: string, out: string) => o.set(`file ${path}`, { rc: 0, out });

    it("finds nothing on a host exactly as rendered", () => {
        expect(compareHost(expected, clean())).toEqual([]);
    });

    it("reports a hand-edited alias file with its content on the host, and a changed mode", () => {
        const edited = alias.content + "extra: someone\n";
        const o = withFile(clean(), alias.path, `present\troot root 644\t${sha256(edited)}\n${Buffer.from(edited).toString("base64")}`);
        withFile(o, "/etc/exim4/system_filter", `present\troot root 666\t${expected.files.find((f) => f.path === "/etc/exim4/system_filter")!.sha256}`);
        // in plan order, which the test does not pin
        expect(compareHost(expected, o)).toEqual(
            expect.arrayContaining([
                { kind: "file", name: "/etc/exim4/system_filter", what: "mode 0666, expected 0644" },
                { kind: "file", name: "/etc/exim4/aliases/wikimedia.test", what: "content differs", onHost: edited },
            ]),
        );
        expect(compareHost(expected, o)).toHaveLength(2);
    });

    it("compares secret files by hash only and never carries their content", () => {
        const secrets = expected.files.filter((f) => f.secret);
        expect(secrets.map((f) => f.path)).toContain("/etc/exim4/secrets.conf");
        expect(secrets.every((f) => f.content === undefined)).toBe(true);
        const script = observeScript(expected, "@@m");
        expect(script).not.toContain("ldap-pass-123");
        // no content is fetched for a secret file, even when it differs
        expect(script).toContain(fileObserveScript(secrets[0].path));
        const items = compareHost(expected, withFile(clean(), secrets[0].path, `present\t${secrets[0].owner} ${secrets[0].group} ${parseInt(secrets[0].mode, 8).toString(8)}\t${sha256("other")}`));
        expect(items).toEqual([{ kind: "file", name: secrets[0].path, what: "content differs (secret: compared by hash only)" }]);
    });

    it("reports a stopped service, a missing package, a deleted file, a missing user and tmpfs mount", () => {
        const o = clean();
        o.set("service spamd", { rc: 1, out: "inactive, enabled (expected active, enabled)" });
        o.set("packages", { rc: 0, out: expected.packages.map((p) => `${p}\t${p === "unbound" ? "" : "ii"}`).join("\n") });
        const user = expected.scripts.find((s) => s.kind === "user")!;
        o.set(`user ${user.name}`, { rc: 1, out: "missing" });
        withFile(o, "/etc/exim4/system_filter", "missing");
        const mount = expected.scripts.find((s) => s.kind === "mount")!;
        o.set(`mount ${mount.name}`, { rc: 1, out: "not mounted" });
        expect(compareHost(expected, o).map((i) => `${i.kind} ${i.name}: ${i.what}`)).toEqual(
            expect.arrayContaining([
                "service spamd: inactive, enabled (expected active, enabled)",
                "package unbound: not installed",
                `user ${user.name}: missing`,
                `mount ${mount.name}: not mounted`,
                "file /etc/exim4/system_filter: missing",
            ]),
        );
    });

    it("checks the same items refresh probes: users, groups, directories, mounts and services reading their declared files", () => {
        expect([...new Set(expected.scripts.map((s) => s.kind))].sort()).toEqual(["directory", "group", "mount", "service", "user"]);
        const exim = expected.scripts.find((s) => s.kind === "service" && s.name === "exim4")!;
        const conf = expected.files.find((f) => f.path === "/etc/exim4/exim4.conf")!;
        expect(exim.probe).toContain(`${conf.sha256}  /etc/exim4/exim4.conf`);
        expect(observeScript(expected, "@@m")).toContain(exim.probe);
    });
});

describe("backups", () => {
    const plans = planFleet(lab());
    it("plans the backup on the store and the forced-command rrsync receiver on the target only", () => {
        const sanger = plans.find((p) => p.host === "sanger")!;
        const lily = plans.find((p) => p.host === "lily")!;
        expect(sanger.cron.map((c) => c.name)).toContain("mailinfra-backup");
        expect(sanger.files.find((f) => f.path === "/root/.ssh/mailinfra-backup")).toMatchObject({ secret: true, mode: "0600" });
        expect(sanger.files.find((f) => f.path === "/usr/local/sbin/mailinfra-backup")?.content).toContain("mailinfra-backup@lily.lab.test");
        const keys = lily.files.find((f) => f.path === "/var/lib/mailinfra-backup/.ssh/authorized_keys")!;
        expect(keys.content).toMatch(/^restrict,command="\/usr\/local\/sbin\/mailinfra-backup-receive" ssh-ed25519 /);
        expect(lily.packages).toEqual(expect.arrayContaining(["rsync", "python3"]));
        expect(plans.filter((p) => p.files.some((f) => f.path.includes("mailinfra-backup-receive"))).map((p) => p.host)).toEqual(["lily"]);
    });

    it("restores a rebuilt (account-less) store before the smoke account and the first push to the relays", () => {
        const sanger = plans.find((p) => p.host === "sanger")!;
        const names = sanger.steps.map((s) => s.name);
        expect(names.indexOf("account-db-schema")).toBeLessThan(names.indexOf("restore-on-rebuild"));
        expect(names.indexOf("restore-on-rebuild")).toBeLessThan(names.indexOf("smoke-account"));
        expect(names.indexOf("restore-on-rebuild")).toBeLessThan(names.indexOf("push-userdb"));
        const step = sanger.steps.find((s) => s.name === "restore-on-rebuild")!;
        expect(step.after).toEqual(["files", "peers"]);
        // only a store without accounts (the smoke account aside) is restored; no backup host = error
        expect(step.script).toContain(`<> 'smoke@wikimedia.test'`);
        expect(step.script).toMatch(/exit 1/);
        const off = labWith((c) => (c.backup.restoreOnRebuild = false));
        expect(planFleet(parseStackConfig(off)).find((p) => p.host === "sanger")!.steps.map((s) => s.name)).not.toContain("restore-on-rebuild");
    });

    it("rejects a backup target that is not a host, or the store itself", () => {
        const withTarget = (t: string) => problemsOf(labWith((c) => (c.backup.targetHost = t)));
        expect(withTarget("nosuch")).toEqual(["mailinfra:backup.targetHost: nosuch is not a host of mailinfra:hosts"]);
        expect(withTarget("sanger")).toEqual(["mailinfra:backup.targetHost: sanger is the IMAP store itself; backups go to another host"]);
    });
});
