// Pinned SSH host identities: config validation, the lab's record, known_hosts rendering, and the check every
// SSH client runs (against a real SSH server in this process: ssh2's Server with host keys made by ssh-keygen).
import { execFileSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseStackConfig } from "../../lib/config";
import { describeHostKey, fingerprint, parseHostKey, replaceInKnownHosts } from "../../lib/hostKeys";
import { planFleet } from "../../lib/roles";
import { closeAllSessions, sessionFor } from "../../provider/ssh";
import { examplePin, labWith, problemsOf, stackConfig } from "./stackConfig";
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { Server } = require("ssh2");

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "mailinfra-hostkeys-"));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

/** A key pair from ssh-keygen: [private key path, public key line]. */
function keygen(name: string, type: "ed25519" | "ecdsa"): [string, string] {
    const file = path.join(dir, name);
    execFileSync("ssh-keygen", ["-q", "-t", type, "-N", "", "-C", name, "-f", file]);
    return [file, fs.readFileSync(`${file}.pub`, "utf8").trim()];
}

describe("host key pins in stack config", () => {
    it("requires a pin for every host and says which ones and how to pin them, in prod", () => {
        const prod = stackConfig("prod") as any;
        delete prod.hosts.sanger.sshHostKeys;
        delete prod.hosts.lily.sshHostKeys;
        let message = "";
        try {
            parseStackConfig(prod, { stack: "prod" });
        } catch (e) {
            message = (e as Error).message;
        }
        expect(message).toContain("mailinfra:hosts: no pinned SSH host key for sanger, lily");
        expect(message).toContain("npm run pin-host -- --stack prod sanger lily");
    });

    it("names a pin that is not a public key of its type", () => {
        const ed = examplePin("Mchenry");
        const [, ecdsa] = keygen("wrongtype", "ecdsa");
        const dss = problemsOf(labWith((c) => (c.hosts.mchenry.sshHostKeys = ["ssh-dss AAAAB3NzaC1kc3M="])));
        expect(dss).toHaveLength(1);
        expect(dss[0]).toMatch(/^mailinfra:hosts\.mchenry\.sshHostKeys\[0\]: must match pattern/);
        const problems = problemsOf(
            labWith((c) => {
                c.hosts.sanger.sshHostKeys = [`ssh-ed25519 ${ecdsa.split(" ")[1]}`];
                c.hosts.lily.sshHostKeys = [ed.slice(0, -8)];
            }),
        );
        expect(problems).toContain('mailinfra:hosts.sanger.sshHostKeys[0]: the base64 part is not a ssh-ed25519 public key (it holds a "ecdsa-sha2-nistp256" key)');
        expect(problems).toContain("mailinfra:hosts.lily.sshHostKeys[0]: an ssh-ed25519 key is 32 bytes");
    });

    it("merges the keys of ssh.hostKeysFile (the lab's record) into the pins of the hosts at those addresses", () => {
        const [, real] = keygen("lab-sanger", "ed25519");
        const file = path.join(dir, "known_hosts");
        fs.writeFileSync(file, `# lab.sh\nsanger,sanger.lab.test,198.51.100.12 ${real}\n198.51.100.11 ${examplePin("Other")}\n`);
        const cfg = parseStackConfig(
            labWith((c) => {
                c.ssh.hostKeysFile = file;
                delete c.hosts.sanger.sshHostKeys;
            }),
        );
        expect(cfg.hosts.sanger.sshHostKeys).toEqual([real.split(" ").slice(0, 2).join(" ")]);
        expect(cfg.hosts.mchenry.sshHostKeys).toEqual([examplePin("mchenry"), examplePin("Other")]);
        // the store moved to the spare's address: the old machine's key (recorded under the name) is not its pin
        const moved = parseStackConfig(
            labWith((c) => {
                c.ssh.hostKeysFile = file;
                c.hosts.sanger = { address: "198.51.100.16", role: "imap", sshHostKeys: [examplePin("Spare")] };
            }),
        );
        expect(moved.hosts.sanger.sshHostKeys).toEqual([examplePin("Spare")]);
        expect(problemsOf(labWith((c) => (c.ssh.hostKeysFile = path.join(dir, "absent"))))).toEqual([
            `mailinfra:ssh.hostKeysFile: cannot read ${path.join(dir, "absent")} (ENOENT); the lab's is written by lab/lab.sh up`,
        ]);
    });

    it("re-pins one host in a known_hosts record and keeps the others' lines", () => {
        const before = `# record\nmchenry,mchenry.lab.test,198.51.100.11 ${examplePin("A")}\nsanger,sanger.lab.test,198.51.100.12 ${examplePin("B")}\n`;
        const after = replaceInKnownHosts(before, "198.51.100.12", ["sanger", "sanger.lab.test", "198.51.100.12"], [examplePin("C")]);
        expect(after).toBe(`# record\nmchenry,mchenry.lab.test,198.51.100.11 ${examplePin("A")}\nsanger,sanger.lab.test,198.51.100.12 ${examplePin("C")}\n`);
    });

    it("shows fingerprints as OpenSSH does", () => {
        const [file, pub] = keygen("fp", "ed25519");
        const openssh = execFileSync("ssh-keygen", ["-l", "-E", "sha256", "-f", `${file}.pub`], { encoding: "utf8" }).split(" ")[1];
        expect(fingerprint(parseHostKey(pub).blob)).toBe(openssh);
        expect(describeHostKey(pub)).toBe(`${openssh} (ssh-ed25519)`);
    });
});

describe("host-to-host SSH trusts only the pins", () => {
    const plans = planFleet(parseStackConfig(stackConfig("prod")));
    const sanger = plans.find((p) => p.host === "sanger")!;

    it("renders the store's known_hosts of its peers from the pins, by FQDN and address", () => {
        const kh = sanger.files.find((f) => f.path === "/root/.ssh/mailinfra-known_hosts")!;
        expect(kh.validate).toContain("ssh-keygen -l -f");
        expect(kh.content).toContain(`mchenry.wikimedia.org,203.0.113.10 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEXAMPLEHostKeyOfMchenryReplaceWithPinHostxx\n`);
        expect(kh.content).toContain("lily.wikimedia.org,203.0.113.12 ");
        expect(kh.content).not.toContain("sanger.wikimedia.org");
    });

    it("uses StrictHostKeyChecking=yes with that file, and trusts on first use nowhere", () => {
        const all = plans.flatMap((p) => p.files.map((f) => f.content)).join("\n");
        expect(all).not.toMatch(/StrictHostKeyChecking=(no|accept-new)/);
        const push = sanger.files.find((f) => f.path === "/usr/local/sbin/mailinfra-push-userdb")!.content;
        expect(push).toContain("-o StrictHostKeyChecking=yes -o UserKnownHostsFile=/root/.ssh/mailinfra-known_hosts -o GlobalKnownHostsFile=/dev/null");
    });
});

describe("the SSH connection checks the host key before authenticating", () => {
    let port = 0;
    let server: any;
    const seen = { authentications: 0, commands: [] as string[] };
    let clientKey = "";
    let edPub = "";
    let ecdsaPub = "";

    beforeAll(async () => {
        const [ed] = keygen("host_ed25519", "ed25519");
        const [ec] = keygen("host_ecdsa", "ecdsa");
        [clientKey] = keygen("client", "ed25519");
        edPub = fs.readFileSync(`${ed}.pub`, "utf8").trim();
        ecdsaPub = fs.readFileSync(`${ec}.pub`, "utf8").trim();
        server = new Server({ hostKeys: [fs.readFileSync(ed), fs.readFileSync(ec)] }, (client: any) => {
            client.on("error", () => undefined);
            client.on("authentication", (ctx: any) => {
                seen.authentications++;
                ctx.accept();
            });
            client.on("ready", () =>
                client.on("session", (accept: any) =>
                    accept().on("exec", (acceptExec: any, _reject: any, info: any) => {
                        seen.commands.push(info.command);
                        const stream = acceptExec();
                        stream.on("data", () => undefined);
                        stream.write("ran\n");
                        stream.exit(0);
                        stream.end();
                    }),
                ),
            );
        });
        await new Promise<void>((ok) => server.listen(0, "127.0.0.1", ok));
        port = server.address().port;
    });
    afterAll(() => {
        closeAllSessions();
        server?.close();
    });

    const connection = (hostKeys: string[], user: string) => ({ host: "127.0.0.1", port, user, privateKeyPath: clientKey, hostKeys, name: "sanger", stack: "lab" });

    it("runs commands on a host that presents its pinned key", async () => {
        const r = await sessionFor(connection([edPub], "pinned")).run("echo hello", "secret on stdin");
        expect(r.stdout).toBe("ran");
        expect(seen.authentications).toBe(1);
    });

    it("offers only the pinned key types, so a host with several keys presents the pinned one", async () => {
        const r = await sessionFor(connection([ecdsaPub], "ecdsa-only")).run("echo hello");
        expect(r.stdout).toBe("ran");
    });

    it("refuses another key before authentication, naming the host, both fingerprints and the re-pin command", async () => {
        const before = { ...seen, commands: [...seen.commands] };
        const [, other] = keygen("other", "ed25519");
        const err = await sessionFor(connection([other], "mismatch"))
            .run("echo hello", "a secret")
            .then(() => undefined, (e: Error) => e);
        expect(err?.message).toContain("SSH host key of sanger (127.0.0.1) does not match its pin: refused before authentication, nothing was sent.");
        expect(err?.message).toContain(`expected (mailinfra:hosts.sanger.sshHostKeys): ${describeHostKey(other)}`);
        expect(err?.message).toContain(`presented: ${describeHostKey(edPub)}`);
        expect(err?.message).toContain("npm run pin-host -- --stack lab sanger");
        expect(seen.authentications).toBe(before.authentications);
        expect(seen.commands).toEqual(before.commands);
    });

    it("asks for ed25519 first whatever the order of the pins", async () => {
        const [, otherEcdsa] = keygen("other-ecdsa", "ecdsa");
        const [, otherEd] = keygen("other-ed", "ed25519");
        const err = await sessionFor(connection([otherEcdsa, otherEd], "order")).run("true").then(() => undefined, (e: Error) => e);
        expect(err?.message).toContain(`presented: ${describeHostKey(edPub)}`);
    });

    it("refuses a host with no pin at all", async () => {
        const err = await sessionFor(connection([], "unpinned")).run("true").then(() => undefined, (e: Error) => e);
        expect(err?.message).toContain("no pinned SSH host key for sanger (127.0.0.1): refusing to connect");
    });
});
