// Provider write integrity (issue 12 item 7): a TCP proxy on loopback in front of a lab host's sshd cuts the
// connection after N bytes of client→server traffic (with a TCP reset, the ECONNRESET that used to kill the
// provider). A File write cut mid-transfer leaves the old content live and fails with a clear error, the next
// write through a healthy path succeeds on a fresh session, and a real `pulumi up` reports the failure.
// Uses the lab's spare host (not in the fleet) and removes the file it wrote.
import { spawn } from "child_process";
import * as crypto from "crypto";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fileKind, FileProps, scriptKind } from "../../provider/resources";
import { closeAllSessions } from "../../provider/ssh";
import { CuttingProxy } from "../cuttingProxy";
import { LAB_CACHE, labHostKeys, must, REPO, Run, run, ssh, waitFor } from "./harness";

const SPARE = fs
    .readFileSync(path.join(REPO, "lab", "hosts"), "utf8")
    .split("\n")
    .map((l) => l.trim().split(/\s+/))
    .find(([name]) => name === "spare")![1];
const TARGET = "/var/tmp/mailinfra-integrity.bin";
const KEY = path.join(LAB_CACHE, "id_lab");
const MB = 1024 * 1024;
const OLD = "old content, still live\n";
const BIG = crypto.randomBytes(6 * MB).toString("base64"); // 8 MB of text
const sha = (s: string) => crypto.createHash("sha256").update(s).digest("hex");

const proxy = new CuttingProxy(SPARE, 22);
// the proxy's address is not spare's, but spare's pinned key is what answers through it
const viaProxy = () => ({ host: "127.0.0.1", port: proxy.port, privateKeyPath: KEY, hostKeys: labHostKeys(SPARE) });
const file = (content: string): FileProps => ({ connection: viaProxy(), path: TARGET, content, mode: "0600", owner: "root", group: "root" });
/** The target's sha256, read over a direct connection (not through the proxy). */
const liveSha = () => must(ssh(SPARE, `sha256sum ${TARGET} | cut -d' ' -f1`), "reading the live file").out.trim();
/** Staged or temporary files a step leaves behind on the host. */
const leftovers = () => must(ssh(SPARE, `ls -A /var/tmp /tmp /dev/shm | grep -E '^(\\.mailinfra-new|tmp\\.)' || true`), "listing leftovers").out.trim();
/** Like harness run(), without blocking the event loop: the proxy lives in this process. */
function runAsync(cmd: string, args: string[], opts: { cwd: string; env: Record<string, string> }): Promise<Run> {
    return new Promise((resolve) => {
        const child = spawn(cmd, args, { cwd: opts.cwd, env: { ...process.env, ...opts.env }, stdio: ["ignore", "pipe", "pipe"] });
        let out = "";
        child.stdout.on("data", (b) => (out += b));
        child.stderr.on("data", (b) => (out += b));
        child.on("close", (code) => resolve({ code: code ?? -1, out }));
    });
}
const failureOf = (p: Promise<unknown>) => p.then(() => new Error("it succeeded"), (e: Error) => e);

describe("provider write integrity over a connection that is cut", () => {
    let leftoversBefore = "";
    let spareWasUp = false;
    const lab = (...args: string[]) => must(run(path.join(REPO, "lab", "lab.sh"), args), `lab.sh ${args.join(" ")}`);
    beforeAll(async () => {
        spareWasUp = /^spare\s+\S+\s+\S+\s+up:/m.test(lab("status").out);
        lab("up", "spare");
        await proxy.listen();
        must(ssh(SPARE, `printf '%s' '${OLD}' >${TARGET}`), "writing the old content");
        leftoversBefore = leftovers();
    });
    afterAll(async () => {
        closeAllSessions();
        await proxy.close();
        ssh(SPARE, `rm -f ${TARGET}`);
        if (!spareWasUp) lab("down", "spare");
    });

    it("keeps the old content live when an 8 MB File write is cut mid-transfer, and says nothing was applied", async () => {
        proxy.cutAfterBytes = 3 * MB;
        const err = await failureOf(fileKind.create(file(BIG)));
        console.log(`[integrity] cut write: ${err.message}`);
        expect(proxy.cuts).toBe(1);
        expect(err.message).toMatch(new RegExp(`^connection to root@127\\.0\\.0\\.1:${proxy.port} lost while writing ${TARGET} \\(.+\\); nothing was applied$`));
        expect(liveSha()).toBe(sha(OLD));
        // the host's side ends on its own (the input check sees EOF) and removes what it staged
        expect(waitFor(() => leftovers() === leftoversBefore, 15_000, 500)).toBe(true);
    });

    it("writes the file on a fresh session once the path is healthy again", async () => {
        proxy.cutAfterBytes = Infinity;
        const before = proxy.connections;
        await fileKind.create(file(BIG));
        expect(proxy.connections).toBe(before + 1);
        expect(liveSha()).toBe(sha(BIG));
    });

    it("fails a step in flight when its connection resets, and runs the next step on a new connection", async () => {
        const step = failureOf(scriptKind.create({ connection: viaProxy(), create: "sleep 15\n" }));
        await new Promise((r) => setTimeout(r, 2000));
        proxy.resetAll();
        const err = await step;
        console.log(`[integrity] in-flight step: ${err.message}`);
        expect(err.message).toMatch(/^connection to root@127\.0\.0\.1:\d+ lost while running the script \(.+\), after the host had the whole step: it may have run in part or in full/);
        expect((await scriptKind.create({ connection: viaProxy(), create: "echo again\n" })).stdout).toBe("again");
    });

    it("names the connect step when the SSH handshake never comes", async () => {
        proxy.resetAll();
        proxy.answerNothing = true;
        try {
            const started = Date.now();
            const err = await failureOf(fileKind.create(file(OLD)));
            console.log(`[integrity] no handshake after ${((Date.now() - started) / 1000).toFixed(1)} s: ${err.message}`);
            expect(err.message).toBe(`connecting to root@127.0.0.1:${proxy.port} timed out (no SSH handshake) before writing ${TARGET}; nothing was applied`);
            expect(liveSha()).toBe(sha(BIG));
        } finally {
            proxy.answerNothing = false;
            proxy.resetAll();
        }
    });

    it("`pulumi up` reports the cut write and leaves the old content; the next `up` writes it", async () => {
        must(ssh(SPARE, `printf '%s' '${OLD}' >${TARGET}`), "writing the old content");
        const dir = fs.mkdtempSync(path.join(os.tmpdir(), "mailinfra-integrity-"));
        try {
            const contentFile = path.join(dir, "content");
            fs.writeFileSync(contentFile, BIG);
            fs.symlinkSync(path.join(REPO, "node_modules"), path.join(dir, "node_modules"));
            fs.writeFileSync(
                path.join(dir, "Pulumi.yaml"),
                `name: integrity-probe\nruntime:\n  name: nodejs\n  options:\n    typescript: true\nmain: index.ts\nplugins:\n  providers:\n    - name: mailinfra\n      path: ${path.join(REPO, "provider")}\n`,
            );
            fs.writeFileSync(
                path.join(dir, "index.ts"),
                [
                    `import * as fs from "fs";`,
                    `import { RemoteFile } from ${JSON.stringify(path.join(REPO, "components", "remote"))};`,
                    `new RemoteFile("big", { connection: ${JSON.stringify(viaProxy())}, path: ${JSON.stringify(TARGET)}, content: fs.readFileSync(${JSON.stringify(contentFile)}, "utf8"), mode: "0600", owner: "root", group: "root" });`,
                ].join("\n"),
            );
            const bin = must(run(path.join(REPO, "scripts", "engine.sh"), []), "engine").out.trim().split("\n").pop()!;
            const env = {
                PATH: `${bin}:${process.env.PATH}`,
                PULUMI_HOME: path.join(dir, "home"),
                PULUMI_BACKEND_URL: `file://${path.join(dir, "state")}`,
                PULUMI_CONFIG_PASSPHRASE: "integrity-probe",
                PULUMI_SKIP_UPDATE_CHECK: "true",
                PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION: "true",
                PULUMI_NODEJS_TRANSPILE_ONLY: "true",
            };
            fs.mkdirSync(path.join(dir, "state"));
            const pulumi = (...args: string[]) => runAsync(path.join(bin, "pulumi"), [...args, "--non-interactive", "--color=never"], { cwd: dir, env });
            must(await pulumi("stack", "init", "probe"), "stack init");

            proxy.cutAfterBytes = 3 * MB;
            const cut = await pulumi("up", "--yes", "--skip-preview");
            console.log(`[integrity] pulumi up through the cut:\n${cut.out.split("\n").filter((l) => /error|lost/.test(l)).join("\n")}`);
            expect(cut.code).not.toBe(0);
            expect(cut.out).toContain(`lost while writing ${TARGET}`);
            expect(cut.out).toContain("nothing was applied");
            expect(liveSha()).toBe(sha(OLD));

            proxy.cutAfterBytes = Infinity;
            must(await pulumi("up", "--yes", "--skip-preview"), "pulumi up through a healthy path");
            expect(liveSha()).toBe(sha(BIG));
            must(await pulumi("destroy", "--yes", "--skip-preview"), "pulumi destroy");
            expect(ssh(SPARE, `test -e ${TARGET}`).code).not.toBe(0);
        } finally {
            fs.rmSync(dir, { recursive: true, force: true });
        }
    });
});
