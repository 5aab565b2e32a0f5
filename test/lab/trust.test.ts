// Pinned host identities on the real lab: the store's SSH host key is swapped (what a rebuilt host, or a machine in
// the middle, presents). pulumi up and mailadmin then refuse before sending anything and show both fingerprints;
// the store's sshd logs no login; re-pinning with the pin command (confirmed with --yes) restores service.
import * as fs from "fs";
import * as path from "path";
import * as yaml from "js-yaml";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import { describeHostKey } from "../../lib/hostKeys";
import { convergedLab, FLEET, must, projectCopy, pulumi, REPO, run, ssh } from "./harness";

const STORE = "198.51.100.12";
const RECORD = path.join(process.env.LAB_RUN ?? "/var/tmp/mailinfra-lab", "known_hosts");

function command(script: string, args: string[], cwd = REPO) {
    return run("node", [path.join(cwd, "scripts", "run-ts.js"), path.join(cwd, "scripts", script), ...args], {
        cwd,
        env: { PULUMI_BACKEND_URL: `file://${REPO}/.pulumi-state`, PULUMI_HOME: `${REPO}/.pulumi-home` },
    });
}

/** The store's keys in the lab's record, as "SHA256:… (type)". */
function recordedFingerprints(): string[] {
    return fs
        .readFileSync(RECORD, "utf8")
        .split("\n")
        .filter((l) => l.startsWith("sanger,"))
        .map((l) => describeHostKey(l.split(" ").slice(1).join(" ")));
}

describe("pinned SSH host identities", () => {
    let swapped = false;
    beforeAll(() => convergedLab(FLEET));
    afterEach(() => {
        // whatever failed: the record (the lab stack's pins) matches the store's key again
        if (swapped) must(command("pin-host.ts", ["--stack", "lab", "--yes", "sanger"]), "re-pin sanger");
    });

    it("a swapped host key: up and mailadmin refuse before authenticating, sshd logs no login, re-pinning restores service", () => {
        const pinned = recordedFingerprints();
        expect(pinned.length).toBeGreaterThan(0);

        // a new identity on the store; sshd restarts with it (this session survives the restart)
        const swap = must(ssh(STORE, "set -e; rm -f /etc/ssh/ssh_host_*; ssh-keygen -q -A; systemctl restart ssh; ssh-keygen -l -E sha256 -f /etc/ssh/ssh_host_ed25519_key.pub"), "swapping sanger's host key");
        swapped = true;
        // the last line is ssh-keygen -l's "256 SHA256:… root@host (ED25519)" (ssh-keygen -A may print before it)
        const presented = swap.out.trim().split("\n").pop()!.split(/\s+/)[1];
        expect(pinned.join(" ")).not.toContain(presented);
        const since = Math.floor(Date.now() / 1000);
        run("sleep", ["1"]);

        // the lab's own ssh checks the record too
        const labSsh = ssh(STORE, "true");
        expect(labSsh.code).not.toBe(0);
        expect(labSsh.out).toMatch(/Host key verification failed/);

        // pulumi up (refresh reads every managed file on the store: each read needs a connection)
        const up = pulumi(["up", "--stack", "lab", "--yes", "--skip-preview", "--refresh"]);
        expect(up.code).not.toBe(0);
        expect(up.out).toContain("SSH host key of sanger (198.51.100.12) does not match its pin: refused before authentication, nothing was sent.");
        expect(up.out).toContain(`presented: ${presented} (ssh-ed25519)`);
        expect(up.out).toContain(pinned.find((p) => p.endsWith("(ssh-ed25519)")));
        expect(up.out).toContain("npm run pin-host -- --stack lab sanger");

        // mailadmin sends SQL (and for add/passwd, cleartext passwords) on stdin: it refuses the same way
        const admin = command("mailadmin.ts", ["--stack", "lab", "list"]);
        expect(admin.code).toBe(1);
        expect(admin.out).toContain("SSH host key of sanger (198.51.100.12) does not match its pin");
        expect(admin.out).toContain(`presented: ${presented} (ssh-ed25519)`);

        const until = Math.floor(Date.now() / 1000) + 1;
        run("sleep", ["1"]);

        // the operator compared the fingerprint on the console: re-pin (the lab's record) and converge
        const pin = must(command("pin-host.ts", ["--stack", "lab", "--yes", "sanger"]), "pin-host");
        expect(pin.out).toContain(`${presented} (ssh-ed25519)`);
        expect(pin.out).toMatch(/sanger: pinned in .*known_hosts/);
        expect(recordedFingerprints()).toContain(`${presented} (ssh-ed25519)`);
        swapped = false;

        // sshd saw the refused connections end before authentication: no accepted login, no session
        const log = must(ssh(STORE, `journalctl -u ssh --since @${since} --until @${until} -o cat --no-pager`), "sshd log").out;
        expect(log).not.toMatch(/Accepted |session opened/);
        expect(log).toMatch(/\[preauth\]/);

        const again = must(pulumi(["up", "--stack", "lab", "--yes", "--skip-preview", "--refresh"]), "pulumi up after re-pinning");
        expect(again.out).toMatch(/smoke test passed/);
        // a pin change is no host change: nothing is replaced or rewritten on the re-pinned host
        expect(again.out).not.toMatch(/\d+ replaced|\d+ updated/);
        expect(must(command("mailadmin.ts", ["--stack", "lab", "list"]), "mailadmin list").out).toContain("smoke@wikimedia.test");
    });

    it("pin-host records the keys in stack config when the stack has no hostKeysFile (pulumi config set --path)", () => {
        const copy = projectCopy();
        try {
            const file = path.join(copy, "Pulumi.lab.yaml");
            const text = fs.readFileSync(file, "utf8");
            fs.writeFileSync(file, text.replace(/^ {4}hostKeysFile: .*\n/m, ""));
            must(command("pin-host.ts", ["--stack", "lab", "--yes", "sanger"], copy), "pin-host into the stack config");
            const doc = yaml.load(fs.readFileSync(file, "utf8")) as any;
            const keys: string[] = doc.config["mailinfra:hosts"].sanger.sshHostKeys;
            expect(keys.map((k) => describeHostKey(k)).sort()).toEqual(recordedFingerprints().sort());
            expect(doc.config["mailinfra:hosts"].mchenry.sshHostKeys).toBeUndefined();
        } finally {
            fs.rmSync(copy, { recursive: true, force: true });
        }
    });
});
