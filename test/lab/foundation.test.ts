// Foundation, proven on real lab hosts with the real engine: bare Debian 12 → converged fleet that
// delivers mail; idempotent; a broken template fails `pulumi up` while the old config keeps serving.
import * as fs from "fs";
import * as yaml from "js-yaml";
import * as path from "path";
import { beforeAll, describe, expect, it } from "vitest";
import { smokeTest } from "../../lib/smoke";
import { freshLab, must, projectCopy, pulumi, REPO, smokePassword, ssh } from "./harness";

const HOSTS = ["mchenry", "sanger", "lily", "otrs", "streber"];
const RELAY = "198.51.100.11";
const STORE = "198.51.100.12";
const SMOKE_ACCOUNT = "smoke@wikimedia.test";

describe("lab foundation", () => {
    let upOutput = "";

    beforeAll(() => {
        freshLab(HOSTS);
        const bare = ssh(STORE, "dpkg-query -W exim4-daemon-heavy dovecot-imapd 2>&1 || true");
        expect(bare.out).toMatch(/no packages found matching/);
        upOutput = must(pulumi(["up", "--stack", "lab", "--yes", "--skip-preview"]), "pulumi up").out;
    });

    it("converges five bare hosts with a real pulumi up", () => {
        expect(upOutput).toMatch(/Resources:\s+\+ \d+ created/);
        for (const address of [RELAY, STORE, "198.51.100.13", "198.51.100.14", "198.51.100.15"])
            expect(ssh(address, "systemctl is-active exim4").out.trim()).toBe("active");
        expect(ssh(STORE, "systemctl is-active dovecot").out.trim()).toBe("active");
    });

    it("mounts the relay's scan directory as tmpfs, owned by Debian-exim, and records it in fstab", () => {
        expect(ssh(RELAY, "findmnt -n -o FSTYPE,OPTIONS /var/spool/exim4/scan").out).toMatch(/^tmpfs .*mode=750/);
        expect(ssh(RELAY, "stat -c %U /var/spool/exim4/scan").out.trim()).toBe("Debian-exim");
        expect(ssh(RELAY, "grep -c ' /var/spool/exim4/scan tmpfs ' /etc/fstab").out.trim()).toBe("1");
    });

    it("delivers a smoke message: SMTP into the relay, read back over IMAPS from the store", async () => {
        const r = await smokeTest({ relayAddress: RELAY, storeAddress: STORE, account: SMOKE_ACCOUNT, password: smokePassword(), timeoutMs: 90_000 });
        expect(r.error).toBeUndefined();
        expect(r.ok).toBe(true);
        // relay then store in the Received chain
        expect(r.received?.join("\n")).toMatch(/mchenry\.lab\.test/);
        expect(r.received?.join("\n")).toMatch(/sanger\.lab\.test/);
        const inMaildir = ssh(STORE, `grep -rl ${r.token} /var/vmail/wikimedia.test/smoke/new /var/vmail/wikimedia.test/smoke/cur`);
        expect(inMaildir.code).toBe(0);
    });

    it("is idempotent: a preview right after reports no changes", () => {
        const r = pulumi(["preview", "--stack", "lab", "--expect-no-changes"]);
        expect(r.out).not.toMatch(/error: no changes were expected/);
        expect(r.code).toBe(0);
    });

    it("preview --diff shows, per host, a line diff of each changed file with secrets masked", () => {
        const copy = projectCopy();
        const partial = path.join(copy, "files/shared/exim4/main-common.ejs");
        fs.writeFileSync(partial, fs.readFileSync(partial, "utf8").replace("smtp_receive_timeout = 1m", "smtp_receive_timeout = 2m"));
        const r = pulumi(["preview", "--stack", "lab", "--diff"], { cwd: copy });
        fs.rmSync(copy, { recursive: true, force: true });
        expect(r.code).toBe(0);
        for (const host of ["mchenry", "sanger", "lily", "otrs", "streber"]) expect(r.out).toContain(`mailinfra:host:File::${host}/etc/exim4/exim4.conf]`);
        expect(r.out).toMatch(/- smtp_receive_timeout = 1m\n\s+\+ smtp_receive_timeout = 2m/);
        expect(r.out).toContain("connection: [secret]");
        expect(r.out).not.toContain(smokePassword());
    });

    it("keeps secrets out of the state file and the engine output in plaintext", () => {
        const state = fs.readFileSync(path.join(REPO, ".pulumi-state/.pulumi/stacks/mailinfra/lab.json"), "utf8");
        expect(state).not.toContain(smokePassword());
        expect(state).not.toContain("BEGIN OPENSSH PRIVATE KEY");
        expect(upOutput).not.toContain(smokePassword());
    });

    it("a broken template fails pulumi up with Exim's message while the old config keeps serving", async () => {
        const before = ssh(RELAY, "sha256sum /etc/exim4/exim4.conf").out;
        const copy = projectCopy();
        const template = path.join(copy, "files/relay/etc/exim4/exim4.conf.ejs");
        fs.writeFileSync(template, fs.readFileSync(template, "utf8").replace("begin routers", "begin routers\n\nthis_is_not_an_option = 1\n"));
        const r = pulumi(["up", "--stack", "lab", "--yes", "--skip-preview"], { cwd: copy });
        fs.rmSync(copy, { recursive: true, force: true });
        expect(r.code).not.toBe(0);
        expect(r.out).toContain("check of new /etc/exim4/exim4.conf failed");
        expect(r.out).toMatch(/Exim configuration error in line \d+/);
        expect(r.out).toContain("the current /etc/exim4/exim4.conf was left in place");
        expect(ssh(RELAY, "sha256sum /etc/exim4/exim4.conf").out).toBe(before);
        const mail = await smokeTest({ relayAddress: RELAY, storeAddress: STORE, account: SMOKE_ACCOUNT, password: smokePassword(), timeoutMs: 90_000 });
        expect(mail.ok).toBe(true);
        // the real project is still in sync with what is live
        expect(pulumi(["preview", "--stack", "lab", "--expect-no-changes"]).code).toBe(0);
    });

    it("pulumi up fails loudly, saying where the message stopped, when mail does not flow", () => {
        const copy = projectCopy();
        const stackFile = path.join(copy, "Pulumi.lab.yaml");
        const doc = yaml.load(fs.readFileSync(stackFile, "utf8")) as { config: Record<string, any> };
        doc.config["mailinfra:smoke"].timeoutSeconds = 15;
        fs.writeFileSync(stackFile, yaml.dump(doc));
        ssh(STORE, "systemctl stop exim4");
        try {
            const r = pulumi(["up", "--stack", "lab", "--yes", "--skip-preview"], { cwd: copy });
            expect(r.code).not.toBe(0);
            expect(r.out).toMatch(/smoke test failed: message mailinfra-smoke-\S+ accepted by the relay .* but not in smoke@wikimedia\.test's INBOX/);
            expect(r.out).toMatch(/where the message stopped:\n\s+mchenry \(198\.51\.100\.11\): queue \d+ message/);
            expect(r.out).toMatch(/== smoke@wikimedia\.test R=imap T=store_smtp defer/);
        } finally {
            ssh(STORE, "systemctl start exim4");
            fs.rmSync(copy, { recursive: true, force: true });
        }
        ssh(RELAY, "exim4 -qff");
        const ok = pulumi(["up", "--stack", "lab", "--yes", "--skip-preview"]);
        expect(ok.out).toMatch(/smoke test passed/);
        expect(ok.code).toBe(0);
    });

    it("bad stack config stops the real engine before any resource, naming the key", () => {
        const copy = projectCopy();
        const stackFile = path.join(copy, "Pulumi.lab.yaml");
        // edited structurally: the CLI rewrites the YAML's layout on every `config set`
        const doc = yaml.load(fs.readFileSync(stackFile, "utf8")) as { config: Record<string, any> };
        doc.config["mailinfra:hosts"].sanger.role = "imapd";
        const mail = doc.config["mailinfra:mail"];
        mail.hostDomian = mail.hostDomain;
        delete mail.hostDomain;
        fs.writeFileSync(stackFile, yaml.dump(doc));
        const r = pulumi(["preview", "--stack", "lab"], { cwd: copy });
        fs.rmSync(copy, { recursive: true, force: true });
        expect(r.code).not.toBe(0);
        expect(r.out).toContain('mailinfra:hosts.sanger.role: must be one of relay, imap, lists, otrs, rt (got "imapd")');
        expect(r.out).toContain("mailinfra:mail.hostDomian: unknown key");
        expect(r.out).not.toMatch(/mailinfra:host:File/);
    });
});
