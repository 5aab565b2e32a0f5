// Runs the real bootstrap + script the provider sends over SSH with a local bash, fed with what a cut or damaged
// connection would deliver: nothing goes live, no partial script runs, and the error says so.
import { spawnSync } from "child_process";
import * as crypto from "crypto";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { describe, expect, it } from "vitest";
import { fileWriteScript, FileProps } from "../../provider/resources";
import { delivery, Delivery, INCOMPLETE_TRANSFER_EXIT, LocalSession } from "../../provider/ssh";

function arrive(d: Delivery, payload: Buffer = d.payload): { code: number; stdout: string; stderr: string } {
    const r = spawnSync("bash", ["-c", d.command], { input: payload, encoding: "utf8" });
    return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

const me = os.userInfo().username;
const myGroup = spawnSync("id", ["-gn"], { encoding: "utf8" }).stdout.trim();
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "mailinfra-delivery-"));
const target = path.join(dir, "big.bin");
const OLD = "old content, live\n";
// 8 MB: larger than the SSH channel window, the size that went live as a 2 MB prefix before
const BIG = crypto.randomBytes(6 * 1024 * 1024).toString("base64");

function fileWrite(content: string): { script: string; props: FileProps } {
    const props: FileProps = { connection: { host: "local" }, path: target, content, mode: "0600", owner: me, group: myGroup };
    return { script: fileWriteScript(props), props };
}

function resetTarget() {
    fs.writeFileSync(target, OLD);
}

function leftovers(): string[] {
    return fs.readdirSync(dir).filter((f) => f !== "big.bin");
}

describe("file content on stdin is checked on the host before it goes live", () => {
    it("writes an 8 MB file that arrived whole", () => {
        resetTarget();
        const r = arrive(delivery(fileWrite(BIG).script, BIG));
        expect(r.stderr).toBe("");
        expect(r.code).toBe(0);
        expect(fs.readFileSync(target, "utf8")).toBe(BIG);
    });

    it("keeps the old file when the content is cut mid-transfer, and says how much arrived", () => {
        resetTarget();
        const d = delivery(fileWrite(BIG).script, BIG);
        const r = arrive(d, d.payload.subarray(0, d.payload.length - BIG.length + 2 * 1024 * 1024));
        expect(r.code).toBe(INCOMPLETE_TRANSFER_EXIT);
        expect(r.stderr).toContain(`the input arrived incomplete (${2 * 1024 * 1024} of ${BIG.length} bytes): nothing was applied`);
        expect(fs.readFileSync(target, "utf8")).toBe(OLD);
        expect(leftovers()).toEqual([]);
    });

    it("keeps the old file when no content arrived at all (was: an empty file went live)", () => {
        resetTarget();
        const d = delivery(fileWrite(BIG).script, BIG);
        const r = arrive(d, d.payload.subarray(0, d.payload.length - BIG.length));
        expect(r.code).toBe(INCOMPLETE_TRANSFER_EXIT);
        expect(r.stderr).toContain(`the input arrived incomplete (0 of ${BIG.length} bytes)`);
        expect(fs.readFileSync(target, "utf8")).toBe(OLD);
    });

    it("keeps the old file when the content arrived altered", () => {
        resetTarget();
        const d = delivery(fileWrite(BIG).script, BIG);
        const damaged = Buffer.from(d.payload);
        damaged[damaged.length - 1000] ^= 0x01;
        const r = arrive(d, damaged);
        expect(r.code).toBe(INCOMPLETE_TRANSFER_EXIT);
        expect(r.stderr).toContain("the input arrived altered (sha256 differs): nothing was applied");
        expect(fs.readFileSync(target, "utf8")).toBe(OLD);
        expect(leftovers()).toEqual([]);
    });

    it("writes an empty file when empty content is what was sent", () => {
        resetTarget();
        const r = arrive(delivery(fileWrite("").script, ""));
        expect(r.code).toBe(0);
        expect(fs.readFileSync(target, "utf8")).toBe("");
    });

    it("gives the script exactly the checked input on its stdin", async () => {
        const r = await new LocalSession().run(`cat; echo "<end>"`, "s3cret\nline two");
        expect(r.stdout).toBe("s3cret\nline two<end>\n");
    });
});

describe("a script runs only when all of it arrived", () => {
    const marker = path.join(dir, "ran");
    // the first line alone would already do something: a prefix of it must never run
    const script = `touch ${marker}\n${"# padding\n".repeat(2000)}echo finished >>${marker}\n`;

    it("runs nothing from a script cut in the middle", () => {
        fs.rmSync(marker, { force: true });
        const d = delivery(script);
        const r = arrive(d, d.payload.subarray(0, 4096));
        expect(r.code).toBe(INCOMPLETE_TRANSFER_EXIT);
        expect(r.stderr).toContain(`the script arrived incomplete (4096 of ${d.payload.length} bytes): nothing was run`);
        expect(fs.existsSync(marker)).toBe(false);
    });

    it("runs nothing from empty stdin", () => {
        const r = arrive(delivery(script), Buffer.alloc(0));
        expect(r.code).toBe(INCOMPLETE_TRANSFER_EXIT);
        expect(r.stderr).toContain("the script arrived incomplete (0 of");
        expect(fs.existsSync(marker)).toBe(false);
    });

    it("runs nothing from an altered script", () => {
        const d = delivery(script);
        const damaged = Buffer.from(d.payload);
        damaged[damaged.length - 3] ^= 0x20;
        const r = arrive(d, damaged);
        expect(r.code).toBe(INCOMPLETE_TRANSFER_EXIT);
        expect(r.stderr).toContain("the script arrived altered (sha256 differs): nothing was run");
        expect(fs.existsSync(marker)).toBe(false);
    });

    it("runs the whole script, with stdin from /dev/null", async () => {
        const r = await new LocalSession().run(`${script}cat; echo "<end>"`);
        expect(r.code).toBe(0);
        expect(r.stdout).toBe("<end>\n");
        expect(fs.readFileSync(marker, "utf8")).toBe("finished\n");
    });

    it("passes the script's own exit code and output through", async () => {
        const r = await new LocalSession().run(`echo out; echo err >&2; exit 3`);
        expect(r).toMatchObject({ code: 3, stdout: "out\n", stderr: "err\n", timedOutAfterS: undefined });
    });
});

describe("the command line carries no secret", () => {
    const secret = "correct horse battery staple";

    it("has neither the input, nor its sha256, nor its base64 on the command line", () => {
        const { command } = delivery(`pw=$(cat)\n`, secret);
        expect(command).not.toContain(secret);
        expect(command).not.toContain(crypto.createHash("sha256").update(secret).digest("hex"));
        expect(command).not.toContain(Buffer.from(secret).toString("base64"));
        expect(command).not.toContain("correct");
    });

    it("puts a different script hash on the command line each time, so it cannot confirm a guess of the input", () => {
        expect(delivery(`pw=$(cat)\n`, secret).command).not.toBe(delivery(`pw=$(cat)\n`, secret).command);
    });

    it("keeps file content off the command line", () => {
        const { command } = delivery(fileWrite(secret).script, secret);
        expect(command).not.toContain(secret);
        expect(command).not.toContain(crypto.createHash("sha256").update(secret).digest("hex"));
    });
});

describe("step deadline", () => {
    it("says the step was stopped at its deadline", async () => {
        const r = await new LocalSession({ deadlineS: 1 }).run(`sleep 20`);
        expect(r.timedOutAfterS).toBe(1);
    });

    it("does not call a script's own exit 124 a timeout", async () => {
        const r = await new LocalSession({ deadlineS: 5 }).run(`exit 124`);
        expect(r).toMatchObject({ code: 124, timedOutAfterS: undefined });
    });
});
