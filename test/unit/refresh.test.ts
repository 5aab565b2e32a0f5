// The provider's read() (`pulumi up --refresh`) against real files on this machine (connection "local"):
// the observed state lands in the properties diff() compares, secrets stay secret, and the reads of one host
// share one remote script.
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { afterAll, describe, expect, it } from "vitest";
import { sha256 } from "../../lib/hash";
import { serviceScript } from "../../lib/hostScripts";
import { changedKeys, inputsOf, readResource } from "../../provider/read";
import { SECRET_SIG, SECRET_VAL } from "../../provider/resources";
import { sessionFor } from "../../provider/ssh";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "mailinfra-refresh-"));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
const local = { host: "local" };
const secret = (value: unknown) => ({ [SECRET_SIG]: SECRET_VAL, value });
const me = os.userInfo().username;
const myGroup = (() => {
    const f = path.join(dir, ".probe");
    fs.writeFileSync(f, "");
    return require("child_process").execSync(`stat -c %G ${f}`, { encoding: "utf8" }).trim() as string;
})();

function fileProps(name: string, declared: string, onHost: string | undefined, mode = "0644") {
    const p = path.join(dir, name);
    if (onHost !== undefined) {
        fs.writeFileSync(p, onHost);
        fs.chmodSync(p, 0o644);
    }
    return { connection: local, path: p, content: declared, mode, owner: me, group: myGroup, sha256: sha256(declared) };
}

describe("refresh: read() of a File", () => {
    it("leaves an undrifted file's state as it is (no spurious diff) and drops the old clear observed hash", async () => {
        const props = { ...fileProps("same", "a = 1\n", "a = 1\n"), observedSha256: "x", observedMeta: "y" };
        const r = await readResource("mailinfra:host:File", props);
        const { observedSha256, observedMeta, ...rest } = props;
        expect(r).toEqual({ gone: false, props: rest });
    });

    it("returns a hand-edited file's content, hash and mode as observed, so the engine shows a text diff and up rewrites it", async () => {
        const props = fileProps("edited", "postmaster: root\n", "postmaster: root\nevil: attacker@example.net\n", "0640");
        const r = await readResource("mailinfra:host:File", props);
        expect(r.gone).toBe(false);
        if (r.gone) return;
        expect(r.props.content).toBe("postmaster: root\nevil: attacker@example.net\n");
        expect(r.props.mode).toBe("0644");
        expect(r.props.sha256).toBe(sha256("postmaster: root\nevil: attacker@example.net\n"));
        // what the engine stores as inputs and diffs against the program's: no output-only keys
        expect(inputsOf(r.props)).toEqual({ ...props, content: "postmaster: root\nevil: attacker@example.net\n", mode: "0644", sha256: undefined });
    });

    it("shows a drifted secret file only as a masked change: no content and no hash of it in the state", async () => {
        const props = { ...fileProps("key", "", "-----BEGIN PRIVATE KEY-----\nstolen\n"), content: secret("-----BEGIN PRIVATE KEY-----\nours\n") };
        delete (props as Record<string, unknown>).sha256;
        const r = await readResource("mailinfra:host:File", props);
        expect(r.gone).toBe(false);
        if (r.gone) return;
        expect(r.props.content).toEqual(secret("(differs on the host: secret, compared by hash only)"));
        const state = JSON.stringify(r.props);
        expect(state).not.toContain("stolen");
        expect(state).not.toContain(sha256("-----BEGIN PRIVATE KEY-----\nstolen\n"));
        expect(r.props.sha256).toBeUndefined();
    });

    it("reports a deleted file as gone, so up creates it again", async () => {
        const r = await readResource("mailinfra:host:File", fileProps("deleted", "x\n", undefined));
        expect(r).toMatchObject({ gone: true, why: expect.stringContaining("is missing") });
    });
});

describe("refresh: read() of a Script", () => {
    it("records a failing probe's last line as `drift` (a change for diff) and clears it once the probe passes", async () => {
        const failing = await readResource("mailinfra:host:Script", { connection: local, create: "true", probe: "echo checking\necho 'dovecot: inactive, disabled'; exit 1" });
        expect(failing).toMatchObject({ gone: false, props: { drift: "dovecot: inactive, disabled" } });
        const passing = await readResource("mailinfra:host:Script", { connection: local, create: "true", probe: "true", drift: "old" });
        expect(passing).toEqual({ gone: false, props: { connection: local, create: "true", probe: "true" } });
    });

    it("fails a service's probe when a file it reads is not as declared, naming the file", async () => {
        const conf = path.join(dir, "svc.conf");
        fs.writeFileSync(conf, "hand edited\n");
        const probe = serviceScript({ name: "x", onChange: "reload" }, [`${conf}=${sha256("declared\n")}`]).probe.split("\n").slice(4).join("\n");
        const r = await readResource("mailinfra:host:Script", { connection: local, create: "true", probe });
        expect(r).toMatchObject({ gone: false, props: { drift: `reads ${conf}, not as declared (reloaded after the repair)` } });
    });
});

describe("refresh: batching", () => {
    it("runs the reads of one host that arrive together as one remote script", async () => {
        const session = sessionFor(local);
        const before = session.commands;
        const reads = Array.from({ length: 25 }, (_, i) => readResource("mailinfra:host:File", fileProps(`batch-${i}`, `${i}\n`, i === 7 ? "changed\n" : `${i}\n`)));
        const results = await Promise.all(reads);
        expect(session.commands - before).toBe(1);
        expect(results.filter((r) => !r.gone && r.props.content === "changed\n")).toHaveLength(1);
    });
});

describe("refresh: diff() after a read", () => {
    const inputs = { connection: local, path: "/etc/x", content: "a\n", mode: "0644", owner: "root", group: "root" };
    it("sees no change on an undrifted resource: outputs recorded in state are not inputs, key material may rotate", () => {
        const state = { ...inputs, connection: { host: "local", privateKey: "old" }, sha256: sha256("a\n"), installId: "i-1", stdout: "" };
        expect(changedKeys(state, { ...inputs, connection: { host: "local", privateKey: "new" } }).size).toBe(0);
    });

    it("sees the observed content, mode and a Script's drift as changes, so up puts them back", () => {
        expect([...changedKeys({ ...inputs, content: "a\nevil: x\n", mode: "0666" }, inputs)].sort()).toEqual(["content", "mode"]);
        expect([...changedKeys({ connection: local, create: "true", drift: "inactive, disabled" }, { connection: local, create: "true" })]).toEqual(["drift"]);
    });
});
