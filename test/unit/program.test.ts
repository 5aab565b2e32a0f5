// The real program under pulumi.runtime.setMocks: resource graph, secrets, and fail-fast config.
import * as pulumi from "@pulumi/pulumi";
import { describe, expect, it } from "vitest";
import { stackConfig } from "./stackConfig";

const SECRET_SIG = pulumi.runtime.specialSigKey;

interface Registered {
    type: string;
    name: string;
    inputs: any;
}

async function runProgram(config: Record<string, unknown>, secrets: Record<string, string>): Promise<{ resources: Registered[]; error?: Error }> {
    const resources: Registered[] = [];
    pulumi.runtime.setMocks(
        {
            newResource: (args) => {
                resources.push({ type: args.type, name: args.name, inputs: args.inputs });
                return { id: `${args.name}-id`, state: args.inputs };
            },
            call: () => ({}),
        },
        "mailinfra",
        "lab",
        false,
    );
    const all: Record<string, string> = {};
    for (const [k, v] of Object.entries(config)) all[`mailinfra:${k}`] = JSON.stringify(v);
    for (const [k, v] of Object.entries(secrets)) all[`mailinfra:${k}`] = v;
    pulumi.runtime.setAllConfig(all, Object.keys(secrets).map((k) => `mailinfra:${k}`));
    try {
        const { deployFleet, readStackConfig } = await import("../../components/fleet.js");
        const hosts = deployFleet(readStackConfig());
        // wait for every registration
        await new Promise((r) => setTimeout(r, 200));
        for (const h of Object.values(hosts)) await Promise.all(h.ready.map((r) => new Promise((ok) => pulumi.all([r.urn]).apply(ok))));
        return { resources };
    } catch (e) {
        return { resources, error: e as Error };
    }
}

const SECRETS = { smokePassword: "pw", ldapPassword: "ldap-pass-123", otrsDbPassword: "otrs-pass-123", tlsPrivateKey: "-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----", userdbSyncKey: "-----BEGIN OPENSSH PRIVATE KEY-----\nx\n-----END OPENSSH PRIVATE KEY-----", bayesLearnKey: "-----BEGIN OPENSSH PRIVATE KEY-----\nb\n-----END OPENSSH PRIVATE KEY-----", backupKey: "-----BEGIN OPENSSH PRIVATE KEY-----\nc\n-----END OPENSSH PRIVATE KEY-----", mailmanWebSecret: "mailman-web-secret-for-test" };

const isSecret = (v: unknown) => !!v && typeof v === "object" && (v as any)[SECRET_SIG] === pulumi.runtime.specialSecretSig;

describe("program under mocks (lab stack)", () => {
    it("registers every host's files with on-host checks and secrets kept secret", async () => {
        const { resources, error } = await runProgram(stackConfig("lab"), { ...SECRETS, smokePassword: "pw-for-test" });
        expect(error).toBeUndefined();
        const files = resources.filter((r) => r.type === "mailinfra:host:File");
        const eximConfs = files.filter((f) => f.inputs.path === "/etc/exim4/exim4.conf");
        expect(eximConfs).toHaveLength(5);
        for (const f of eximConfs) expect(f.inputs.validate).toContain("exim4 -bV -C");
        const dovecot = files.find((f) => f.name === "sanger/etc/dovecot/dovecot.conf");
        expect(dovecot?.inputs.validate).toContain("doveconf -n -c");

        const key = files.find((f) => f.name === "mchenry/etc/ssl/private/mailinfra.key");
        expect(isSecret(key?.inputs.content)).toBe(true);
        expect(key?.inputs).toMatchObject({ mode: "0640", owner: "root", group: "ssl-cert" });
        const bayesKey = files.find((f) => f.name === "sanger/root/.ssh/mailinfra-bayes");
        expect(isSecret(bayesKey?.inputs.content)).toBe(true);

        const smoke = resources.find((r) => r.name === "sanger:step:smoke-account");
        expect(isSecret(smoke?.inputs.stdin)).toBe(true);
        expect(JSON.stringify(smoke?.inputs.create)).not.toContain("pw-for-test");
        for (const r of resources.filter((r) => r.type.startsWith("mailinfra:host:"))) expect(isSecret(r.inputs.connection)).toBe(true);

        const packages = resources.filter((r) => r.type === "mailinfra:host:Packages");
        expect(packages.map((p) => p.name).sort()).toEqual(["lily:packages", "mchenry:packages", "otrs:packages", "sanger:packages", "streber:packages"]);
    });

    it("reloads a service only through the hashes of the files it reads", async () => {
        const { resources } = await runProgram(stackConfig("lab"), SECRETS);
        const svc = resources.find((r) => r.name === "sanger:service:dovecot");
        // its two config files and the managed certificate and key
        const plain = (t: any) => (isSecret(t) ? t.value : t) as string;
        const triggers: any[] = isSecret(svc?.inputs.triggers) ? svc?.inputs.triggers.value : svc?.inputs.triggers;
        expect(triggers.map((t: any) => plain(t).split("=")[0]).sort()).toEqual(["/etc/dovecot/dovecot-sql.conf.ext", "/etc/dovecot/dovecot.conf", "/etc/ssl/certs/mailinfra.pem", "/etc/ssl/private/mailinfra.key"]);
        for (const t of triggers) expect(plain(t)).toMatch(/=[0-9a-f]{64}$/);
    });

    it("restarts a daemon when a secret file it reads is rotated, without a clear hash of the secret in state", async () => {
        const keyTrigger = async (key: string) => {
            const { resources } = await runProgram(stackConfig("lab"), { ...SECRETS, tlsPrivateKey: key });
            const svc = resources.find((r) => r.name === "sanger:service:dovecot");
            // one secret element makes the whole trigger list secret in state
            expect(isSecret(svc?.inputs.triggers)).toBe(true);
            return (svc?.inputs.triggers.value as string[]).find((t) => t.startsWith("/etc/ssl/private/mailinfra.key="));
        };
        const before = await keyTrigger("-----BEGIN PRIVATE KEY-----\nold\n-----END PRIVATE KEY-----");
        const after = await keyTrigger("-----BEGIN PRIVATE KEY-----\nnew\n-----END PRIVATE KEY-----");
        expect(before).toBeDefined();
        expect(after).not.toBe(before);
    });

    it("deploys the web UI's settings as a secret readable by www-data only, with no derived key in clear", async () => {
        const { resources, error } = await runProgram(stackConfig("lab"), SECRETS);
        expect(error).toBeUndefined();
        const files = resources.filter((r) => r.type === "mailinfra:host:File");
        for (const p of ["/etc/mailman3/mailman-web.py", "/etc/mailman3/mailman.cfg", "/etc/mailman3/mailman-hyperkitty.cfg"]) {
            const f = files.find((f) => f.name === `lily${p}`);
            expect(isSecret(f?.inputs.content), p).toBe(true);
            expect(f?.inputs.content.value).not.toContain("(derived from secret");
        }
        expect(files.find((f) => f.name === "lily/etc/mailman3/mailman-web.py")?.inputs).toMatchObject({ mode: "0640", owner: "root", group: "www-data" });
        const web = resources.find((r) => r.name === "lily:service:mailman3-web");
        expect(isSecret(web?.inputs.triggers)).toBe(true);
    });

    it("names the missing mailmanWebSecret when the lists host has the web UI", async () => {
        const { mailmanWebSecret: _, ...without } = SECRETS;
        const { error } = await runProgram(stackConfig("lab"), without);
        expect(error?.message).toContain("mailinfra:mailmanWebSecret");
    });

    it("fails before registering anything when the config is invalid", async () => {
        const bad = structuredClone(stackConfig("lab")) as any;
        bad.hosts.sanger.role = "imapd";
        const { resources, error } = await runProgram(bad, SECRETS);
        expect(error?.message).toContain('mailinfra:hosts.sanger.role: must be one of relay, imap, lists, otrs, rt (got "imapd")');
        expect(resources).toHaveLength(0);
    });
});
