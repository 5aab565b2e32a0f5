// The provider's SSH session against an SSH server on loopback (ssh2's Server running each command with a local
// bash), behind a proxy that resets connections: a lost connection fails the step in flight with a clear error,
// never kills the process, and the next step gets a fresh connection. The lab test does the same against sshd.
import { spawn } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { HostSession } from "../../provider/ssh";
import { CuttingProxy } from "../cuttingProxy";

// eslint-disable-next-line @typescript-eslint/no-require-imports
const ssh2 = require("ssh2");

/** An SSH server that accepts any key and runs exec requests with bash, stdin/stdout/stderr wired through. */
function bashOverSsh(): Promise<{ port: number; close: () => void; hostKey: string }> {
    const pair = ssh2.utils.generateKeyPairSync("ed25519");
    const server = new ssh2.Server({ hostKeys: [pair.private] }, (client: any) => {
        client.on("error", () => undefined);
        client.on("authentication", (ctx: any) => ctx.accept());
        client.on("ready", () =>
            client.on("session", (accept: any) =>
                accept().on("exec", (accept: any, _reject: any, info: { command: string }) => {
                    const stream = accept();
                    const child = spawn("bash", ["-c", info.command], { stdio: ["pipe", "pipe", "pipe"] });
                    child.stdin.on("error", () => undefined);
                    stream.on("error", () => undefined);
                    stream.pipe(child.stdin);
                    child.stdout.pipe(stream, { end: false });
                    child.stderr.pipe(stream.stderr);
                    child.on("close", (code: number) => {
                        stream.exit(code);
                        stream.end();
                    });
                }),
            ),
        );
    });
    return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve({ port: server.address().port, close: () => server.close(), hostKey: pair.public.trim().split(" ").slice(0, 2).join(" ") })));
}

describe("SSH session over a connection that is reset", () => {
    let server: { port: number; close: () => void; hostKey: string };
    let proxy: CuttingProxy;
    let session: HostSession;
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "mailinfra-session-"));
    const target = path.join(dir, "marker");

    beforeAll(async () => {
        server = await bashOverSsh();
        proxy = new CuttingProxy("127.0.0.1", server.port);
        await proxy.listen();
        // the server's own key is pinned: the session's host key check passes, as against a pinned lab host
        session = new HostSession({ host: "127.0.0.1", port: proxy.port, privateKey: ssh2.utils.generateKeyPairSync("ed25519").private, hostKeys: [server.hostKey] });
    });
    afterAll(async () => {
        session.dispose();
        await proxy.close();
        server.close();
    });

    it("runs a step and returns its output", async () => {
        const r = await session.run(`echo hello; echo warn >&2; exit 4`);
        expect(r).toMatchObject({ code: 4, stdout: "hello", stderr: "warn" });
    });

    it("fails a step whose input was still travelling when the connection reset: nothing was applied", async () => {
        proxy.resetAll();
        proxy.cutAfterBytes = 1024 * 1024;
        const big = "x".repeat(6 * 1024 * 1024);
        const err = await session.run(`cat >${target}`, big, `writing ${target}`).then(
            () => new Error("it succeeded"),
            (e: Error) => e,
        );
        expect(err.message).toMatch(new RegExp(`^connection to root@127\\.0\\.0\\.1:${proxy.port} lost while writing ${target} \\(.+\\); nothing was applied$`));
        expect(proxy.cuts).toBe(1);
        // the "host" side saw a short input and never ran the script body
        await new Promise((r) => setTimeout(r, 300));
        expect(fs.existsSync(target)).toBe(false);
    });

    it("opens a fresh connection for the next step", async () => {
        proxy.cutAfterBytes = Infinity;
        const before = proxy.connections;
        expect((await session.run(`echo again`)).stdout).toBe("again");
        expect(proxy.connections).toBe(before + 1);
    });

    it("fails a running step when the connection resets under it, saying it may have run", async () => {
        const step = session.run(`sleep 5`, undefined, "running the script").then(
            () => new Error("it succeeded"),
            (e: Error) => e,
        );
        await new Promise((r) => setTimeout(r, 500));
        proxy.resetAll();
        const err = await step;
        expect(err.message).toMatch(/lost while running the script \(.+\), after the host had the whole step: it may have run in part or in full/);
        expect((await session.run(`echo back`)).stdout).toBe("back");
    });

    it("survives a reset of an idle connection (no unhandled error event) and reconnects", async () => {
        await session.run(`true`);
        proxy.resetAll();
        await new Promise((r) => setTimeout(r, 200));
        expect((await session.run(`echo fine`)).stdout).toBe("fine");
    });

    it("runs a step on a fresh connection when the pooled one died just before it (before anything was sent)", async () => {
        await session.run(`true`);
        const before = proxy.connections;
        proxy.resetAll();
        expect((await session.run(`echo fine`)).stdout).toBe("fine");
        expect(proxy.connections).toBe(before + 1);
    });
});
